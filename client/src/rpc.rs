//! One unary call on the wire: the codec and the per-attempt request.
//!
//! The generated stubs take their request by value, so retrying a
//! `ModelInfer` through them would copy every tensor once per attempt.
//! Calling [`tonic::client::Grpc`] directly with a codec that encodes an
//! `Arc` of the message lets each attempt share one request instead.

use std::{marker::PhantomData, sync::Arc};

use prost::Message;
use tonic::{
    Status,
    codec::{Codec, EncodeBuf, Encoder},
};
use tonic_prost::ProstDecoder;

/// A gRPC method: its wire path and the names tonic records for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Method {
    pub(crate) service: &'static str,
    pub(crate) name: &'static str,
    pub(crate) path: &'static str,
}

macro_rules! methods {
    ($($const:ident = $service:literal / $name:literal;)*) => {$(
        pub(crate) const $const: Method = Method {
            service: $service,
            name: $name,
            path: concat!("/", $service, "/", $name),
        };
    )*};
}

methods! {
    SERVER_LIVE = "inference.GRPCInferenceService" / "ServerLive";
    SERVER_READY = "inference.GRPCInferenceService" / "ServerReady";
    MODEL_READY = "inference.GRPCInferenceService" / "ModelReady";
    SERVER_METADATA = "inference.GRPCInferenceService" / "ServerMetadata";
    MODEL_METADATA = "inference.GRPCInferenceService" / "ModelMetadata";
    MODEL_INFER = "inference.GRPCInferenceService" / "ModelInfer";
    MODEL_STREAM_INFER = "inference.GRPCInferenceService" / "ModelStreamInfer";
    MODEL_CONFIG = "inference.GRPCInferenceService" / "ModelConfig";
    MODEL_STATISTICS = "inference.GRPCInferenceService" / "ModelStatistics";
    HEALTH_CHECK = "grpc.health.v1.Health" / "Check";
}

/// Encodes an `Arc<Req>` (borrowing the message) and decodes a `Resp`.
pub(crate) struct SharedCodec<Req, Resp>(PhantomData<fn(Req) -> Resp>);

impl<Req, Resp> Default for SharedCodec<Req, Resp> {
    fn default() -> Self {
        SharedCodec(PhantomData)
    }
}

impl<Req, Resp> Codec for SharedCodec<Req, Resp>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + 'static,
{
    type Encode = Arc<Req>;
    type Decode = Resp;
    type Encoder = SharedEncoder<Req>;
    type Decoder = ProstDecoder<Resp>;

    fn encoder(&mut self) -> Self::Encoder {
        SharedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

pub(crate) struct SharedEncoder<Req>(PhantomData<fn(Req)>);

impl<Req: Message> Encoder for SharedEncoder<Req> {
    type Item = Arc<Req>;
    type Error = Status;

    fn encode(&mut self, item: Arc<Req>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // `EncodeBuf` grows on demand, so prost's only error (not enough
        // room) cannot happen; tonic's own encoder relies on the same.
        item.encode(buf)
            .map_err(|e| Status::internal(format!("cannot encode the request: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_wire_paths() {
        assert_eq!(
            MODEL_INFER.path,
            "/inference.GRPCInferenceService/ModelInfer"
        );
        assert_eq!(HEALTH_CHECK.path, "/grpc.health.v1.Health/Check");
        assert_eq!(MODEL_READY.service, "inference.GRPCInferenceService");
        assert_eq!(MODEL_READY.name, "ModelReady");
    }
}
