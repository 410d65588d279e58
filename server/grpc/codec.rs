//! The codec of the inference service: prost, except that a request body
//! that is not a valid message of the RPC's request type is the caller's
//! fault.
//!
//! tonic's `ProstCodec` answers an undecodable message with INTERNAL
//! ("failed to decode Protobuf message"), which tells the client the server
//! broke and makes clients with retry policies send the same bytes again.
//! [`CallerCodec`] answers INVALID_ARGUMENT with prost's description of
//! where the message went wrong, and marks the status so that
//! [`super::faults`] counts it (the codec is built per request by generated
//! code and holds no state of its own). build.rs generates the service
//! with this codec.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::metadata::MetadataValue;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Response metadata that marks an undecodable request; [`super::faults`]
/// counts and removes it before the answer leaves the server.
pub(crate) const UNDECODABLE_MARK: &str = "x-oxserve-undecodable";

/// [`ProstCodec`] whose decode errors are INVALID_ARGUMENT.
#[derive(Debug)]
pub(crate) struct CallerCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for CallerCodec<T, U> {
    fn default() -> Self {
        CallerCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for CallerCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CallerDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CallerDecoder {
            inner: ProstCodec::<T, U>::default().decoder(),
        }
    }
}

/// See [`CallerCodec`].
#[derive(Debug)]
pub(crate) struct CallerDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for CallerDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner
            .decode(buf)
            .map_err(|status| undecodable::<U>(status.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// The caller's status for a message of type `U` that prost could not
/// decode, `detail` being prost's description.
pub(crate) fn undecodable<U>(detail: &str) -> Status {
    let full = std::any::type_name::<U>();
    let name = full.rsplit("::").next().unwrap_or(full);
    let mut status = Status::invalid_argument(format!(
        "the request is not a valid {name} protobuf message: {detail}"
    ));
    status
        .metadata_mut()
        .insert(UNDECODABLE_MARK, MetadataValue::from_static("1"));
    status
}

/// Whether `status` is the answer to an undecodable request.
pub(crate) fn is_undecodable(status: &Status) -> bool {
    status.metadata().contains_key(UNDECODABLE_MARK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxserve_proto::inference::ModelInferRequest;
    use tonic::Code;

    // tonic builds a `DecodeBuf` only inside itself: the decoder's path
    // through a real server is tested in tests/faults.rs.
    #[test]
    fn an_undecodable_message_is_invalid_argument_naming_the_type() {
        let status = undecodable::<ModelInferRequest>("invalid wire type");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the request is not a valid ModelInferRequest protobuf message: invalid wire type"
        );
        assert!(is_undecodable(&status));
        assert!(!is_undecodable(&Status::invalid_argument("other")));
    }
}
