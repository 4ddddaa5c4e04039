//! The codec every generated stub uses: prost's, except for what a message
//! that does not decode answers. Prost refuses a whole message when one of
//! its strings is not UTF-8, and tonic reports every decode failure as
//! `INTERNAL`. But bytes a client sent that do not decode are the client's
//! mistake, like any other bad field: `INVALID_ARGUMENT`, naming the field
//! (`field 'contact_id' is not valid UTF-8`), never echoing the bytes.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstEncoder};

/// [`ProstCodec`] with decode failures answered as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = FieldDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        FieldDecoder(PhantomData)
    }
}

/// Decodes `U`; a failure names the field it happened in.
#[derive(Debug, Clone)]
pub struct FieldDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for FieldDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(undecodable(&e)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// What a client is told about a message that does not decode.
///
/// Prost keeps the failing field's path private and shows it only in its
/// message, `failed to decode Protobuf message: Inner.field: Outer.inner:
/// <cause>`, innermost first; this turns that into `field 'inner.field'
/// <cause>`. Should prost's wording ever change, its message is passed on
/// whole (a unit test pins the wording).
pub fn undecodable(error: &prost::DecodeError) -> String {
    const PREFIX: &str = "failed to decode Protobuf message: ";
    let text = error.to_string();
    let Some(rest) = text.strip_prefix(PREFIX) else {
        return format!("request does not decode: {text}");
    };
    let mut path = Vec::new();
    let mut cause = rest;
    while let Some((location, tail)) = cause.split_once(": ") {
        let Some((message, field)) = location.split_once('.') else {
            break;
        };
        let is_name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !(is_name(message) && is_name(field)) {
            break;
        }
        path.push(field);
        cause = tail;
    }
    let cause = match cause {
        "invalid string value: data is not UTF-8 encoded" => "is not valid UTF-8",
        other => other,
    };
    if path.is_empty() {
        return format!("request does not decode: {cause}");
    }
    path.reverse();
    format!("field '{}' {cause}", path.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    /// `RequestHandoffRequest` with `bytes` where the real one has strings,
    /// so a test can put anything in them.
    #[derive(Clone, PartialEq, prost::Message)]
    struct LooseRequest {
        #[prost(bytes = "vec", tag = "1")]
        contact_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        source_bot: Vec<u8>,
        #[prost(message, optional, tag = "5")]
        context: Option<LooseContext>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct LooseContext {
        #[prost(message, optional, tag = "1")]
        budget: Option<LooseBudget>,
        #[prost(bytes = "vec", repeated, tag = "8")]
        answered_questions: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct LooseBudget {
        #[prost(bytes = "vec", tag = "3")]
        currency: Vec<u8>,
    }

    fn decode_error(loose: &LooseRequest) -> String {
        let bytes = loose.encode_to_vec();
        let e = v1::RequestHandoffRequest::decode(bytes.as_slice()).unwrap_err();
        undecodable(&e)
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let bad = vec![b'c', 0xFF, 0xFE];
        let top = LooseRequest {
            contact_id: bad.clone(),
            source_bot: b"lead".to_vec(),
            context: None,
        };
        assert_eq!(decode_error(&top), "field 'contact_id' is not valid UTF-8");
        let nested = LooseRequest {
            contact_id: b"c-1".to_vec(),
            source_bot: b"lead".to_vec(),
            context: Some(LooseContext {
                budget: Some(LooseBudget {
                    currency: bad.clone(),
                }),
                answered_questions: Vec::new(),
            }),
        };
        assert_eq!(
            decode_error(&nested),
            "field 'context.budget.currency' is not valid UTF-8"
        );
        let listed = LooseRequest {
            contact_id: b"c-1".to_vec(),
            source_bot: b"lead".to_vec(),
            context: Some(LooseContext {
                budget: None,
                answered_questions: vec![b"ok".to_vec(), bad],
            }),
        };
        assert_eq!(
            decode_error(&listed),
            "field 'context.answered_questions' is not valid UTF-8"
        );
    }

    #[test]
    fn other_undecodable_bytes_say_why() {
        // Field 1 as a varint where a string belongs.
        let e = v1::RequestHandoffRequest::decode(&[0x08, 0x01][..]).unwrap_err();
        assert_eq!(
            undecodable(&e),
            "field 'contact_id' invalid wire type: Varint (expected LengthDelimited)"
        );
        // A length that runs past the end.
        let e = v1::RequestHandoffRequest::decode(&[0x0A, 0x05, b'a'][..]).unwrap_err();
        assert_eq!(undecodable(&e), "field 'contact_id' buffer underflow");
        let e = v1::RequestHandoffRequest::decode(&[0xFF][..]).unwrap_err();
        assert!(
            undecodable(&e).starts_with("request does not decode: "),
            "{}",
            undecodable(&e)
        );
    }
}
