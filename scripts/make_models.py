#!/usr/bin/env python3
"""Generate every ONNX model oxserve's examples and tests use.

Usage (from anywhere):  .venv/bin/python scripts/make_models.py

Writes
  examples/models/mlp/1/model.onnx            FP32 input [-1,784] -> output [-1,10]
  examples/models/intent/1/model.onnx         BYTES text [-1,1] -> label [-1], probabilities [-1,C]
  tests/models/identity_<dt>/1/model.onnx     INPUT0 -> OUTPUT0 (Identity), [-1,-1], one per datatype
  tests/models/add_sub/1/model.onnx           OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, [-1,16]
  tests/models/versioned/{1,3}/model.onnx     OUTPUT0 = INPUT0 + version, [-1,1]
  tests/fixtures/versioned_v2.onnx            the same with + 2, for tests that add a version
  tests/models/broken/1/model.onnx            not an ONNX model (failed-load path)
  tests/models/slow/1/model.onnx              OUTPUT0 = tanh(tanh(tanh(x@x)@x)@x), square [-1,-1]
  tests/models/spin/1/model.onnx              ITERATIONS INT64 [1] -> busy for that many 128x128 products
  tests/models/fixed/1/model.onnx             INPUT0 [2,3] -> OUTPUT0 [2,3] (no batch dim)
  tests/fixtures/gather/1/model.onnx          INDEX INT64 [-1,1] -> OUTPUT0 = [10,20,30,40][INDEX]
                                              (an index past 3 fails inside ONNX Runtime)

and checks each one with onnx.checker and by running it in onnxruntime.
Everything is seeded, so re-running produces byte-identical files.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "models"
TESTS = ROOT / "tests" / "models"

# Hand-built graphs: opset 17 with the IR version that goes with it (8); both
# well inside what onnxruntime 1.31 accepts.
OPSET = 17
IR_VERSION = 8
PRODUCER = "oxserve-make_models"

# Protocol datatype -> (ONNX element type, numpy dtype used for checking).
# bf16 has no numpy dtype: it is checked via raw uint16 bit patterns.
IDENTITY_TYPES = {
    "bool": (TensorProto.BOOL, np.bool_),
    "int8": (TensorProto.INT8, np.int8),
    "int16": (TensorProto.INT16, np.int16),
    "int32": (TensorProto.INT32, np.int32),
    "int64": (TensorProto.INT64, np.int64),
    "uint8": (TensorProto.UINT8, np.uint8),
    "uint16": (TensorProto.UINT16, np.uint16),
    "uint32": (TensorProto.UINT32, np.uint32),
    "uint64": (TensorProto.UINT64, np.uint64),
    "fp16": (TensorProto.FLOAT16, np.float16),
    "bf16": (TensorProto.BFLOAT16, None),
    "fp32": (TensorProto.FLOAT, np.float32),
    "fp64": (TensorProto.DOUBLE, np.float64),
    "bytes": (TensorProto.STRING, np.object_),
}


# --------------------------------------------------------------------------
# helpers


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def make_model(graph: onnx.GraphProto, opset: int = OPSET) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name=PRODUCER,
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    return model


def save(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString(deterministic=True)
    path.write_bytes(data)
    # Re-check the file as written.
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def report(path: Path, detail: str) -> None:
    print(f"ok  {rel(path):45s} {path.stat().st_size:>8d} B  {detail}")


def vi(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


# --------------------------------------------------------------------------
# examples/models/mlp


def make_mlp() -> None:
    path = EXAMPLES / "mlp" / "1" / "model.onnx"
    rng = np.random.default_rng(20240601)
    hidden = 128
    # He-style init keeps the activations in a sane range.
    w1 = (rng.standard_normal((784, hidden)) * np.sqrt(2.0 / 784)).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.01).astype(np.float32)
    w2 = (rng.standard_normal((hidden, 10)) * np.sqrt(2.0 / hidden)).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.01).astype(np.float32)

    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1"),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["output"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [vi("input", TensorProto.FLOAT, ["batch", 784])],
        [vi("output", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(w1, "fc1.weight"),
            numpy_helper.from_array(b1, "fc1.bias"),
            numpy_helper.from_array(w2, "fc2.weight"),
            numpy_helper.from_array(b2, "fc2.bias"),
        ],
    )
    graph.doc_string = "784 -> 128 ReLU -> 10 softmax, random (seeded) weights"
    save(make_model(graph), path)

    sess = session(path)
    x = np.random.default_rng(1).random((3, 784), dtype=np.float32)
    (y,) = sess.run(None, {"input": x})
    h = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    ref = np.exp(h - h.max(axis=1, keepdims=True))
    ref /= ref.sum(axis=1, keepdims=True)
    assert y.shape == (3, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-6)
    report(path, "input[-1,784] -> output[-1,10]")


# --------------------------------------------------------------------------
# examples/models/intent

INTENT_DATA = {
    "greeting": [
        "hi", "hello", "hey", "hi there", "hello there", "hey there",
        "good morning", "good afternoon", "good evening", "hi, how are you?",
        "how are you doing", "how are you", "how's it going", "what's up",
        "hey, how are you today", "hello, nice to meet you", "nice to meet you",
        "greetings", "yo", "hiya", "howdy", "hello friend", "hi bot",
        "hey buddy", "morning!", "good day to you", "hello, anyone there?",
        "hi! how have you been", "hey how is it going", "hello how do you do",
    ],
    "goodbye": [
        "bye", "goodbye", "bye bye", "see you later", "see you soon",
        "see you tomorrow", "talk to you later", "catch you later",
        "have a nice day", "have a good one", "good night", "i'm leaving now",
        "i have to go", "gotta go", "farewell", "later!", "so long",
        "take care", "until next time", "bye for now", "i'm off, bye",
        "ok see you", "that's all, goodbye", "peace out", "cheers, bye",
        "have a great evening", "see ya", "i'm done for today, bye",
        "signing off", "good bye and take care",
    ],
    "thanks": [
        "thanks", "thank you", "thanks a lot", "thank you very much",
        "many thanks", "thanks so much", "thx", "ty", "much appreciated",
        "i appreciate it", "i appreciate your help", "thanks for your help",
        "thank you for the help", "thanks, that helped", "that was helpful, thanks",
        "great, thank you", "perfect, thanks", "awesome thanks", "cheers for that",
        "thanks a million", "thank you kindly", "you're a lifesaver, thanks",
        "thanks for the quick answer", "really appreciate it", "thanks buddy",
        "thank you so much for your time", "big thanks", "thanks again",
        "ok thanks", "nice, thank you",
    ],
    "weather": [
        "what's the weather like", "what is the weather today",
        "will it rain tomorrow", "is it going to rain", "how hot is it outside",
        "how cold is it today", "do i need an umbrella", "weather forecast",
        "what's the forecast for this weekend", "is it sunny outside",
        "will it snow tonight", "what's the temperature", "temperature outside",
        "is it windy today", "weather in london", "what's the weather in paris",
        "will it be sunny tomorrow", "how's the weather", "is there a storm coming",
        "rain forecast for today", "should i wear a jacket", "humidity today",
        "is it cloudy", "any chance of rain", "weekly weather forecast",
        "what will the weather be tomorrow", "how warm will it get today",
        "snow forecast", "is it freezing outside", "weather report please",
    ],
    "help": [
        "help", "i need help", "can you help me", "help me please",
        "what can you do", "how does this work", "i'm stuck", "i have a problem",
        "i need assistance", "can i talk to a human", "support please",
        "how do i use this", "i don't understand", "show me what you can do",
        "what are your features", "i need some support", "something is not working",
        "it doesn't work", "can someone assist me", "please assist",
        "help with my account", "i can't log in", "how do i reset my password",
        "who can i contact for support", "get me an agent", "i have a question",
        "can you explain how to use it", "what commands do you understand",
        "need help urgently", "assist me",
    ],
    "order_status": [
        "where is my order", "what's the status of my order", "track my order",
        "order status", "has my order shipped", "when will my order arrive",
        "my package hasn't arrived", "where is my package", "track package",
        "when will my delivery come", "is my order on the way",
        "check my order status", "order tracking", "my order is late",
        "delivery status", "did you ship my order yet", "tracking number for my order",
        "when does my parcel arrive", "estimated delivery date",
        "i haven't received my order", "status of order 12345",
        "where's my stuff", "has the package been dispatched", "shipping status",
        "how long until my order gets here", "is my package delayed",
        "can you track my shipment", "my delivery hasn't come",
        "what happened to my order", "order 98765 status",
    ],
}


def make_intent() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    path = EXAMPLES / "intent" / "1" / "model.onnx"
    texts, labels = [], []
    for label, phrases in INTENT_DATA.items():
        for p in phrases:
            texts.append(p)
            labels.append(label)

    clf = LogisticRegression(C=10.0, max_iter=2000, random_state=0)
    pipe = Pipeline(
        [
            # Word uni+bigrams; the default token pattern keeps 2+ char words,
            # which skl2onnx turns into an onnxruntime Tokenizer regex.
            ("tfidf", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=True, sublinear_tf=True)),
            ("clf", clf),
        ]
    )
    pipe.fit(np.array(texts), np.array(labels))
    classes = [str(c) for c in pipe.classes_]

    onx = to_onnx(
        pipe,
        initial_types=[("text", StringTensorType([None, 1]))],
        final_types=[
            ("label", StringTensorType([None])),
            ("probabilities", FloatTensorType([None, len(classes)])),
        ],
        options={id(clf): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    fix_string_normalizer_locale(onx)
    # skl2onnx collects the opset domains in a set: sort them so the file does
    # not depend on PYTHONHASHSEED.
    opsets = sorted(((o.domain, o.version) for o in onx.opset_import))
    del onx.opset_import[:]
    onx.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets)
    # Name the dynamic batch dimension like the hand-built models do.
    for v in list(onx.graph.input) + list(onx.graph.output):
        dim0 = v.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "batch"
    onx.producer_name = PRODUCER
    onx.producer_version = "1"
    onx.doc_string = "intent classifier (tf-idf word n-grams + logistic regression); classes: " + ", ".join(classes)
    save(onx, path)

    ins = [(i.name, i.type.tensor_type.elem_type) for i in onx.graph.input]
    outs = [(o.name, o.type.tensor_type.elem_type) for o in onx.graph.output]
    assert ins == [("text", TensorProto.STRING)], ins
    assert outs == [("label", TensorProto.STRING), ("probabilities", TensorProto.FLOAT)], outs

    sess = session(path)
    probe = [
        "Hi, how are you?",
        "Thank you so much!",
        "Will it rain in Berlin tomorrow?",
        "Where is my order?",
        "Goodbye, see you later",
        "Can you help me?",
        "Ünïcödé HÉLLO 🙂",
    ]
    x = np.array(probe, dtype=object).reshape(-1, 1)
    label, prob = sess.run(["label", "probabilities"], {"text": x})
    assert label.shape == (len(probe),), label.shape
    assert prob.shape == (len(probe), len(classes)) and prob.dtype == np.float32
    assert label[0] == "greeting", f"'Hi, how are you?' classified as {label[0]!r}"
    expected = ["greeting", "thanks", "weather", "order_status", "goodbye", "help"]
    assert list(label[: len(expected)]) == expected, list(label)
    # The ONNX graph must agree with scikit-learn.
    n = len(expected)
    np.testing.assert_allclose(prob[:n], pipe.predict_proba(np.array(probe[:n])), rtol=1e-4, atol=1e-5)
    assert list(pipe.predict(np.array(probe[:n]))) == expected
    report(path, f"text[-1,1] -> label[-1], probabilities[-1,{len(classes)}]")
    print(f"    intent classes (probabilities column order): {classes}")
    for p, l, pr in zip(probe, label, prob):
        print(f"    {p!r:40s} -> {l} ({pr.max():.2f})")


def fix_string_normalizer_locale(model: onnx.ModelProto) -> None:
    """Pin StringNormalizer's locale to one every Linux libc has.

    onnxruntime's StringNormalizer defaults to "en_US.UTF-8" on Linux and then
    fails at session creation on machines (e.g. slim containers) without that
    locale installed. The "C" locale always exists; lower-casing in it covers
    ASCII, which is all the vocabulary is (non-ASCII text still runs, it is
    just not case-folded).
    """
    for node in model.graph.node:
        if node.op_type != "StringNormalizer":
            continue
        for a in list(node.attribute):
            if a.name == "locale":
                node.attribute.remove(a)
        node.attribute.append(helper.make_attribute("locale", "C"))


# --------------------------------------------------------------------------
# tests/models


def make_identity(dt: str) -> None:
    path = TESTS / f"identity_{dt}" / "1" / "model.onnx"
    elem, np_dtype = IDENTITY_TYPES[dt]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"], name="identity")],
        f"identity_{dt}",
        [vi("INPUT0", elem, ["batch", "n"])],
        [vi("OUTPUT0", elem, ["batch", "n"])],
    )
    save(make_model(graph), path)

    sess = session(path)
    rng = np.random.default_rng(7)
    if dt == "bytes":
        x = np.array([["", "a"], ["hello", "ünïcode"], ["x" * 100, "tab\tnewline\n"]], dtype=object)
    elif dt == "bool":
        x = rng.integers(0, 2, (3, 4)).astype(np.bool_)
    elif dt == "bf16":
        # bfloat16: feed through OrtValue with raw bits.
        x = None
    elif np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        x = rng.integers(info.min, info.max, (3, 4), dtype=np_dtype, endpoint=True)
    else:
        x = rng.standard_normal((3, 4)).astype(np_dtype)

    if dt == "bf16":
        run_bf16_identity(sess)
    else:
        (y,) = sess.run(None, {"INPUT0": x})
        assert y.shape == x.shape, (y.shape, x.shape)
        assert y.dtype == x.dtype, (y.dtype, x.dtype)
        assert (y == x).all(), (x, y)
    report(path, f"INPUT0[-1,-1] -> OUTPUT0[-1,-1] ({onnx.TensorProto.DataType.Name(elem)})")


def run_bf16_identity(sess: ort.InferenceSession) -> None:
    bits = np.array([[0x3F80, 0xC000, 0x0000], [0x7F80, 0x4049, 0x8001]], dtype=np.uint16)
    x = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, TensorProto.BFLOAT16)
    binding = sess.io_binding()
    binding.bind_ortvalue_input("INPUT0", x)
    binding.bind_output("OUTPUT0")
    sess.run_with_iobinding(binding)
    (out,) = binding.get_outputs()
    assert out.shape() == [2, 3], out.shape()
    assert out.data_type() == "tensor(bfloat16)", out.data_type()
    # Read the raw bits back.
    y = np.frombuffer(out_bytes(out), dtype=np.uint16).reshape(2, 3)
    assert (y == bits).all(), (bits, y)


def out_bytes(v: ort.OrtValue) -> bytes:
    # numpy() on a bfloat16 OrtValue is not supported in every onnxruntime
    # release; fall back to copying through a uint16 view of the buffer.
    try:
        arr = v.numpy()
        return np.ascontiguousarray(arr).view(np.uint16).tobytes()
    except Exception:
        import ctypes

        n = int(np.prod(v.shape()))
        buf = (ctypes.c_uint16 * n).from_address(v.data_ptr())
        return bytes(buf)


def make_add_sub() -> None:
    path = TESTS / "add_sub" / "1" / "model.onnx"
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"], name="add"),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub"),
        ],
        "add_sub",
        [vi("INPUT0", TensorProto.FLOAT, ["batch", 16]), vi("INPUT1", TensorProto.FLOAT, ["batch", 16])],
        [vi("OUTPUT0", TensorProto.FLOAT, ["batch", 16]), vi("OUTPUT1", TensorProto.FLOAT, ["batch", 16])],
    )
    save(make_model(graph), path)
    sess = session(path)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 16)).astype(np.float32)
    b = rng.standard_normal((2, 16)).astype(np.float32)
    o0, o1 = sess.run(["OUTPUT0", "OUTPUT1"], {"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(o0, a + b)
    np.testing.assert_array_equal(o1, a - b)
    report(path, "INPUT0,INPUT1[-1,16] -> OUTPUT0=sum, OUTPUT1=difference [-1,16]")


def make_versioned(version: int, path: Path | None = None) -> None:
    path = path or TESTS / "versioned" / str(version) / "model.onnx"
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "addend"], ["OUTPUT0"], name="add")],
        f"versioned_v{version}",
        [vi("INPUT0", TensorProto.FLOAT, ["batch", 1])],
        [vi("OUTPUT0", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(np.array([float(version)], dtype=np.float32), "addend")],
    )
    save(make_model(graph), path)
    sess = session(path)
    x = np.array([[0.0], [10.0]], dtype=np.float32)
    (y,) = sess.run(None, {"INPUT0": x})
    np.testing.assert_array_equal(y, x + version)
    report(path, f"OUTPUT0 = INPUT0 + {version}.0")


def make_broken() -> None:
    path = TESTS / "broken" / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an ONNX model\n")
    try:
        session(path)
    except Exception as e:  # noqa: BLE001 - any load failure is what we want
        report(path, f"fails to load as intended ({type(e).__name__})")
    else:
        raise AssertionError("broken model loaded")


def make_slow() -> None:
    path = TESTS / "slow" / "1" / "model.onnx"
    nodes = [
        helper.make_node("MatMul", ["INPUT0", "INPUT0"], ["m1"], name="matmul1"),
        helper.make_node("Tanh", ["m1"], ["t1"], name="tanh1"),
        helper.make_node("MatMul", ["t1", "INPUT0"], ["m2"], name="matmul2"),
        helper.make_node("Tanh", ["m2"], ["t2"], name="tanh2"),
        helper.make_node("MatMul", ["t2", "INPUT0"], ["m3"], name="matmul3"),
        helper.make_node("Tanh", ["m3"], ["OUTPUT0"], name="tanh3"),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [vi("INPUT0", TensorProto.FLOAT, ["n", "n"])],
        [vi("OUTPUT0", TensorProto.FLOAT, ["n", "n"])],
    )
    graph.doc_string = "OUTPUT0 = tanh(tanh(tanh(x@x)@x)@x) for a square x; cost grows with n^3"
    save(make_model(graph), path)

    # The declared dims are the symbolic "n" for both axes; graph input shapes
    # are reported as [-1, -1].
    sess = session(path, threads=1)
    rng = np.random.default_rng(5)
    small = rng.standard_normal((4, 4)).astype(np.float32)
    (y,) = sess.run(None, {"INPUT0": small})
    ref = np.tanh(np.tanh(np.tanh(small @ small) @ small) @ small)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    timings = []
    for n in (256, 512, 768, 1024, 2048):
        x = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
        sess.run(None, {"INPUT0": x})  # warm-up
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            sess.run(None, {"INPUT0": x})
            best = min(best, time.perf_counter() - t0)
        timings.append(f"{n}x{n}: {best * 1000:.1f} ms")
    report(path, "INPUT0[n,n] -> OUTPUT0[n,n]")
    print(f"    slow timings (onnxruntime, intra_op_num_threads=1, best of 3): {', '.join(timings)}")


def make_spin() -> None:
    """A model whose run time the client sets with a tiny request: a Loop of
    ITERATIONS steps, each a 128x128 matrix product, so tests can hold a
    worker busy for a known while without sending megabytes."""
    path = TESTS / "spin" / "1" / "model.onnx"
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_in", "x_in"], ["prod"], name="square"),
            helper.make_node("Tanh", ["prod"], ["x_out"], name="squash"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
        ],
        "spin_body",
        [
            vi("i", TensorProto.INT64, []),
            vi("cond_in", TensorProto.BOOL, []),
            vi("x_in", TensorProto.FLOAT, [128, 128]),
        ],
        [vi("cond_out", TensorProto.BOOL, []), vi("x_out", TensorProto.FLOAT, [128, 128])],
    )
    nodes = [
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["start"],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.05]),
            name="start",
        ),
        helper.make_node("Squeeze", ["ITERATIONS"], ["trips"], name="trips"),
        helper.make_node("Loop", ["trips", "cond", "start"], ["final"], body=body, name="spin"),
        helper.make_node("ReduceSum", ["final", "axes"], ["OUTPUT0"], keepdims=0, name="total"),
    ]
    graph = helper.make_graph(
        nodes,
        "spin",
        [vi("ITERATIONS", TensorProto.INT64, [1])],
        [vi("OUTPUT0", TensorProto.FLOAT, [])],
        initializer=[
            numpy_helper.from_array(np.array([128, 128], dtype=np.int64), "shape"),
            numpy_helper.from_array(np.array(True), "cond"),
            numpy_helper.from_array(np.array([0, 1], dtype=np.int64), "axes"),
        ],
    )
    graph.doc_string = "Busy for ITERATIONS 128x128 matrix products; OUTPUT0 is a scalar"
    save(make_model(graph), path)
    sess = session(path, threads=1)
    sess.run(None, {"ITERATIONS": np.array([1], dtype=np.int64)})
    t0 = time.perf_counter()
    sess.run(None, {"ITERATIONS": np.array([1000], dtype=np.int64)})
    per = (time.perf_counter() - t0) / 1000
    report(path, f"ITERATIONS[1] -> OUTPUT0[]; {per * 1e6:.0f} us per iteration")


def make_fixed() -> None:
    path = TESTS / "fixed" / "1" / "model.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"], name="identity")],
        "fixed",
        [vi("INPUT0", TensorProto.FLOAT, [2, 3])],
        [vi("OUTPUT0", TensorProto.FLOAT, [2, 3])],
    )
    save(make_model(graph), path)
    sess = session(path)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = sess.run(None, {"INPUT0": x})
    np.testing.assert_array_equal(y, x)
    report(path, "INPUT0[2,3] -> OUTPUT0[2,3]")


def make_gather() -> None:
    path = ROOT / "tests" / "fixtures" / "gather" / "1" / "model.onnx"
    table = helper.make_tensor("TABLE", TensorProto.FLOAT, [4], [10.0, 20.0, 30.0, 40.0])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["TABLE", "INDEX"], ["OUTPUT0"], name="gather", axis=0)],
        "gather",
        [vi("INDEX", TensorProto.INT64, [-1, 1])],
        [vi("OUTPUT0", TensorProto.FLOAT, [-1, 1])],
        initializer=[table],
    )
    save(make_model(graph), path)
    sess = session(path)
    (y,) = sess.run(None, {"INDEX": np.array([[2]], dtype=np.int64)})
    np.testing.assert_array_equal(y, [[30.0]])
    try:
        sess.run(None, {"INDEX": np.array([[9]], dtype=np.int64)})
    except Exception:  # noqa: BLE001 - the failure is the point
        pass
    else:
        raise AssertionError("an index out of range did not fail")
    report(path, "INDEX[-1,1] -> OUTPUT0[-1,1]; index 9 fails at run time")


def make_misshapen() -> None:
    """A model bug: it declares rows of 6 values but reshapes them into rows
    of 4, which ONNX Runtime refuses at run time (as FAIL, a server fault)
    for an odd number of rows."""
    path = ROOT / "tests" / "fixtures" / "misshapen" / "1" / "model.onnx"
    # Through an Identity, so that ONNX's checker cannot see the mismatch.
    shape = helper.make_tensor("ROWS_OF_4", TensorProto.INT64, [2], [-1, 4])
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["ROWS_OF_4"], ["SHAPE"], name="shape"),
            helper.make_node("Reshape", ["INPUT0", "SHAPE"], ["OUTPUT0"], name="reshape"),
        ],
        "misshapen",
        [vi("INPUT0", TensorProto.FLOAT, [-1, 6])],
        [vi("OUTPUT0", TensorProto.FLOAT, [-1, 4])],
        initializer=[shape],
    )
    save(make_model(graph), path)
    sess = session(path)
    try:
        sess.run(None, {"INPUT0": np.zeros((1, 6), dtype=np.float32)})
    except ort.capi.onnxruntime_pybind11_state.Fail:
        pass
    else:
        raise AssertionError("a row of 6 was reshaped into rows of 4")
    (y,) = sess.run(None, {"INPUT0": np.zeros((2, 6), dtype=np.float32)})
    assert y.shape == (3, 4), y.shape
    report(path, "INPUT0[-1,6] -> OUTPUT0[-1,4]; one row fails at run time with FAIL")


def main() -> int:
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, opset {OPSET}, ir_version {IR_VERSION}")
    make_mlp()
    make_intent()
    for dt in IDENTITY_TYPES:
        make_identity(dt)
    make_add_sub()
    make_versioned(1)
    make_versioned(3)
    make_versioned(2, ROOT / "tests" / "fixtures" / "versioned_v2.onnx")
    make_broken()
    make_slow()
    make_spin()
    make_fixed()
    make_gather()
    make_misshapen()
    total = sum(p.stat().st_size for base in (EXAMPLES, TESTS) for p in base.rglob("*.onnx"))
    print(f"all models written and verified; total {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
