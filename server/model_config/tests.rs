use std::time::Duration;

use oxserve_proto::inference::model_config::SchedulingChoice;

use super::*;
use crate::tensor::{DataType, ModelSpec, TensorSpec};

fn defaults() -> Defaults {
    Defaults {
        max_batch_size: crate::model_config::BatchSize::Fixed(32),
        batch_latency_budget: std::time::Duration::from_millis(100),
        split_large_requests: true,
        preferred_batch_sizes: vec![8],
        max_queue_delay: Duration::from_micros(100),
        inline_threshold: Duration::ZERO,
        max_queue_size: 50,
        instances: crate::model_config::InstanceCount::Fixed(2),
        intra_op_threads: 1,
        spinning: false,
        shrink_arena: true,
    }
}

/// An ONNX-declared model like `mlp`: [-1, 784] -> [-1, 10].
fn mlp() -> ModelSpec {
    ModelSpec {
        name: "mlp".into(),
        inputs: vec![TensorSpec {
            name: "input".into(),
            datatype: DataType::Fp32,
            dims: vec![-1, 784],
        }],
        outputs: vec![TensorSpec {
            name: "output".into(),
            datatype: DataType::Fp32,
            dims: vec![-1, 10],
        }],
        max_batch_size: 0,
        max_request_rows: usize::MAX,
        utf8_inputs: Vec::new(),
    }
}

fn complete_text(text: &str, onnx: &ModelSpec) -> Result<Resolved, ModelConfigError> {
    let written = parse(text)?;
    complete("mlp", Some(&written), onnx, &[Device::Cpu], &defaults())
}

#[test]
fn a_triton_config_parses() {
    let written = parse(
        r#"
        name: "mlp"
        platform: "onnxruntime_onnx"
        max_batch_size: 16
        input [ { name: "input", data_type: TYPE_FP32, dims: [ 784 ] } ]
        output [ { name: "output", data_type: TYPE_FP32, dims: [ 10 ] } ]
        instance_group [ { count: 2, kind: KIND_CPU } ]
        dynamic_batching { preferred_batch_size: [ 4, 8 ], max_queue_delay_microseconds: 500 }
        version_policy: { latest: { num_versions: 2 } }
        "#,
    )
    .unwrap();
    assert_eq!(written.config.max_batch_size, Some(16));
    let plan = LoadPlan::new(Some(&written), &defaults()).unwrap();
    assert_eq!(plan.instances, vec![Device::Cpu, Device::Cpu]);
    assert_eq!(plan.select_versions(&[1, 2, 5]).unwrap(), vec![2, 5]);
    let r = complete("mlp", Some(&written), &mlp(), &plan.instances, &defaults()).unwrap();
    assert_eq!(r.scheduling.policy.max_batch_size, 16);
    assert_eq!(r.scheduling.policy.preferred_batch_sizes, vec![4, 8]);
    assert_eq!(
        r.scheduling.policy.max_queue_delay,
        Duration::from_micros(500)
    );
    assert_eq!(r.scheduling.capacities[0], 50);
    assert_eq!(r.spec.max_batch_size, 16);
    assert_eq!(r.spec.inputs[0].dims, vec![-1, 784]);
}

#[test]
fn list_fields_parse_with_or_without_a_colon() {
    assert_eq!(
        colon_before_lists("input [ { dims: [ 1 ] } ]"),
        "input :[ { dims: [ 1 ] } ]"
    );
    assert_eq!(colon_before_lists("input: [ ]"), "input: [ ]");
    assert_eq!(
        colon_before_lists("name: \"a [b]\" # c [d]\ninput[ ]"),
        "name: \"a [b]\" # c [d]\ninput:[ ]"
    );
    let a = parse("input [ { name: \"x\" } ]").unwrap();
    let b = parse("input: [ { name: \"x\" } ]").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.config.input[0].name, "x");
}

#[test]
fn unknown_fields_fail_naming_the_field() {
    let e = parse("sequence_batching { }").unwrap_err();
    assert!(e.to_string().contains("sequence_batching"), "{e}");
    let e = parse("max_batch_size: \"eight\"").unwrap_err();
    assert!(
        e.to_string().contains("max_batch_size") || e.to_string().contains("eight"),
        "{e}"
    );
    let e = parse("input [ { name: \"x\", data_type: TYPE_FLOAT } ]").unwrap_err();
    assert!(e.to_string().contains("TYPE_FLOAT"), "{e}");
    let e = parse("input [ { name: \"x\", reshape: { shape: [1] } } ]").unwrap_err();
    assert!(e.to_string().contains("reshape"), "{e}");
}

#[test]
fn automatic_instances_run_one_per_cpu_within_the_memory_bound() {
    let auto = Defaults {
        instances: InstanceCount::Auto,
        intra_op_threads: 0,
        ..defaults()
    };
    let cpus = runtime::available_cpus();
    let plan = LoadPlan::new(None, &auto).unwrap();
    let small = plan.sessions(1 << 20);
    assert_eq!(small.len(), cpus, "one instance per CPU");
    assert!(
        small.iter().all(|s| s.threads.intra_op == 1),
        "one thread each"
    );
    // A model too large to copy once per CPU: as many as fit, sharing the
    // CPUs between them.
    let large = plan.sessions(AUTO_INSTANCE_MEMORY / 2 + 1);
    assert_eq!(large.len(), 1);
    assert_eq!(large[0].threads.intra_op, cpus);
    assert_eq!(
        plan.sessions(4 * AUTO_INSTANCE_MEMORY).len(),
        1,
        "at least one"
    );
    // Instances the configuration names are loaded whatever the size.
    let written = parse("instance_group [ { count: 3, kind: KIND_CPU } ]").unwrap();
    let named = LoadPlan::new(Some(&written), &auto).unwrap();
    let sessions = named.sessions(4 * AUTO_INSTANCE_MEMORY);
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions[0].threads.intra_op, (cpus / 3).max(1));
    // A fixed default count is kept too, with its share of the CPUs.
    let fixed = LoadPlan::new(None, &defaults())
        .unwrap()
        .sessions(4 * AUTO_INSTANCE_MEMORY);
    assert_eq!(fixed.len(), 2);
    assert_eq!(fixed[0].threads.intra_op, 1, "the server's fixed default");
}

#[test]
fn an_absent_config_is_completed_from_the_model_and_defaults() {
    let plan = LoadPlan::new(None, &defaults()).unwrap();
    assert_eq!(plan.instances.len(), 2);
    assert_eq!(plan.filename, "model.onnx");
    // Triton's default version policy: the latest version only.
    assert_eq!(plan.select_versions(&[1, 3]).unwrap(), vec![3]);
    let r = complete("mlp", None, &mlp(), &plan.instances, &defaults()).unwrap();
    let c = &r.config;
    assert_eq!(c.name, "mlp");
    assert_eq!(c.platform, "onnxruntime_onnx");
    assert_eq!(c.backend, "onnxruntime");
    assert_eq!(c.max_batch_size, Some(32));
    assert_eq!(
        c.input[0].dims,
        vec![784],
        "config dims leave out the batch dimension"
    );
    assert_eq!(
        c.input[0].data_type,
        oxserve_proto::inference::DataType::TypeFp32 as i32
    );
    assert_eq!(c.output[0].dims, vec![10]);
    let Some(SchedulingChoice::DynamicBatching(db)) = &c.scheduling_choice else {
        panic!("dynamic batching is on for a model that can batch");
    };
    assert_eq!(db.preferred_batch_size, vec![8]);
    assert_eq!(db.max_queue_delay_microseconds, 100);
    assert_eq!(db.default_queue_policy.unwrap().max_queue_size, 50);
    assert_eq!(c.instance_group[0].count, 2);
}

#[test]
fn max_batch_size_zero_turns_batching_off() {
    let r = complete_text("max_batch_size: 0", &mlp()).unwrap();
    assert_eq!(
        r.scheduling.policy,
        crate::scheduler::BatchPolicy::unbatched()
    );
    assert_eq!(r.config.max_batch_size, Some(0));
    assert_eq!(
        r.config.input[0].dims,
        vec![-1, 784],
        "full dims without batching"
    );
    assert!(r.config.scheduling_choice.is_none());
    let e = complete_text("max_batch_size: 0\ndynamic_batching { }", &mlp()).unwrap_err();
    assert!(e.to_string().contains("dynamic_batching"), "{e}");
}

#[test]
fn written_tensors_must_match_the_model() {
    let e = complete_text(
        "input [ { name: \"pixels\", data_type: TYPE_FP32, dims: [784] } ]",
        &mlp(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("'pixels'") && e.to_string().contains("'input'"),
        "{e}"
    );
    let e = complete_text(
        "input [ { name: \"input\", data_type: TYPE_FP64, dims: [784] } ]",
        &mlp(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("TYPE_FP64") && e.to_string().contains("TYPE_FP32"),
        "{e}"
    );
    let e = complete_text(
        "input [ { name: \"input\", data_type: TYPE_FP32, dims: [785] } ]",
        &mlp(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("dims"), "{e}");
    // With max_batch_size 0 the batch dimension must be written too.
    let e = complete_text(
        "max_batch_size: 0\ninput [ { name: \"input\", data_type: TYPE_FP32, dims: [784] } ]",
        &mlp(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("dims"), "{e}");
}

#[test]
fn a_written_dim_may_fix_a_variable_one() {
    let mut onnx = mlp();
    onnx.inputs[0].dims = vec![-1, -1];
    let r = complete_text(
        "input [ { name: \"input\", data_type: TYPE_FP32, dims: [784] } ]",
        &onnx,
    )
    .unwrap();
    assert_eq!(r.spec.inputs[0].dims, vec![-1, 784]);
    assert_eq!(r.config.input[0].dims, vec![784]);
}

#[test]
fn batching_needs_a_variable_first_dimension() {
    let mut onnx = mlp();
    onnx.inputs[0].dims = vec![1, 784];
    let e = complete_text("max_batch_size: 8", &onnx).unwrap_err();
    assert!(e.to_string().contains("max_batch_size"), "{e}");
    // Without a written max_batch_size it simply does not batch.
    let r = complete("mlp", None, &onnx, &[Device::Cpu], &defaults()).unwrap();
    assert_eq!(r.config.max_batch_size, Some(0));
}

#[test]
fn invalid_settings_name_their_field() {
    for (text, field) in [
        ("name: \"other\"", "name"),
        ("platform: \"tensorflow_savedmodel\"", "platform"),
        ("backend: \"python\"", "backend"),
        ("max_batch_size: -1", "max_batch_size"),
        (
            "dynamic_batching { preferred_batch_size: [ 64 ] }",
            "preferred_batch_size",
        ),
        (
            "dynamic_batching { priority_levels: 2 default_priority_level: 3 }",
            "default_priority_level",
        ),
        (
            "dynamic_batching { priority_levels: 2 priority_queue_policy { key: 3 value: { max_queue_size: 1 } } }",
            "priority_queue_policy[3]",
        ),
    ] {
        let e = complete_text(text, &mlp()).unwrap_err();
        assert!(e.to_string().contains(field), "{text}: {e}");
    }
    for (text, field) in [
        ("instance_group [ { count: -2 } ]", "count"),
        ("instance_group [ { kind: KIND_CPU, gpus: [0] } ]", "gpus"),
        (
            "default_model_filename: \"../model.onnx\"",
            "default_model_filename",
        ),
        (
            "optimization { execution_accelerators { cpu_execution_accelerator [ { name: \"openvino\" } ] } }",
            "cpu_execution_accelerator",
        ),
        (
            "optimization { execution_accelerators { gpu_execution_accelerator [ { name: \"magic\" } ] } }",
            "gpu_execution_accelerator",
        ),
    ] {
        let e = LoadPlan::new(Some(&parse(text).unwrap()), &defaults()).unwrap_err();
        assert!(e.to_string().contains(field), "{text}: {e}");
    }
    let plan = LoadPlan::new(
        Some(&parse("version_policy { specific { versions: [4] } }").unwrap()),
        &defaults(),
    )
    .unwrap();
    assert!(
        plan.select_versions(&[1, 2])
            .unwrap_err()
            .to_string()
            .contains("version_policy")
    );
}

#[test]
fn gpu_kinds_ask_for_a_gpu_with_or_without_fallback() {
    let plan = LoadPlan::new(
        Some(&parse("instance_group [ { kind: KIND_GPU, gpus: [0, 1] }, { kind: KIND_AUTO } ]\noptimization { execution_accelerators { gpu_execution_accelerator [ { name: \"tensorrt\" } ] } }").unwrap()),
        &defaults(),
    )
    .unwrap();
    let gpu = |device_id, required| Device::Gpu {
        device_id,
        tensorrt: true,
        required,
    };
    assert_eq!(
        plan.instances,
        vec![gpu(0, true), gpu(1, true), gpu(0, false)]
    );
}
