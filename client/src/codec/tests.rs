use super::*;

/// Encodes `values`, checks the exact wire bytes, and decodes them back.
fn round_trip<T: Element + PartialEq + std::fmt::Debug>(values: &[T], wire: &[u8]) {
    let raw = encode(values);
    assert_eq!(raw, wire, "{} encoding", T::DATATYPE);
    assert_eq!(decode::<T>(&raw, values.len()).unwrap(), values);
}

#[test]
fn every_fixed_datatype_round_trips_little_endian() {
    round_trip(&[true, false, true], &[1, 0, 1]);
    round_trip(&[0u8, 255], &[0, 255]);
    round_trip(&[0x0102u16], &[2, 1]);
    round_trip(&[0x0102_0304u32], &[4, 3, 2, 1]);
    round_trip(&[0x0102_0304_0506_0708u64], &[8, 7, 6, 5, 4, 3, 2, 1]);
    round_trip(&[-1i8, 1], &[0xff, 1]);
    round_trip(&[-2i16], &[0xfe, 0xff]);
    round_trip(&[-3i32], &[0xfd, 0xff, 0xff, 0xff]);
    round_trip(&[i64::MIN], &[0, 0, 0, 0, 0, 0, 0, 0x80]);
    round_trip(&[1.0f32, -2.5], &[0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
    round_trip(&[1.0f64], &[0, 0, 0, 0, 0, 0, 0xf0, 0x3f]);
}

#[test]
fn datatypes_match_the_protocol_table() {
    assert_eq!(bool::DATATYPE, DataType::Bool);
    assert_eq!(u8::DATATYPE, DataType::Uint8);
    assert_eq!(u16::DATATYPE, DataType::Uint16);
    assert_eq!(u32::DATATYPE, DataType::Uint32);
    assert_eq!(u64::DATATYPE, DataType::Uint64);
    assert_eq!(i8::DATATYPE, DataType::Int8);
    assert_eq!(i16::DATATYPE, DataType::Int16);
    assert_eq!(i32::DATATYPE, DataType::Int32);
    assert_eq!(i64::DATATYPE, DataType::Int64);
    assert_eq!(f32::DATATYPE, DataType::Fp32);
    assert_eq!(f64::DATATYPE, DataType::Fp64);
}

#[test]
fn special_floats_survive_bit_for_bit() {
    let values = [f32::NAN, f32::INFINITY, -0.0, f32::MIN_POSITIVE];
    let back = decode::<f32>(&encode(&values), 4).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&values));
}

#[test]
fn empty_tensors_round_trip() {
    assert!(encode::<f32>(&[]).is_empty());
    assert_eq!(decode::<f32>(&[], 0).unwrap(), Vec::<f32>::new());
    assert_eq!(decode_bytes(&[], 0).unwrap(), Vec::<Vec<u8>>::new());
}

#[test]
fn fixed_decode_rejects_wrong_lengths() {
    let err = decode::<f32>(&[0; 7], 2).unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.contains("need 8 bytes, got 7")),
        "{err}"
    );
    assert!(decode::<f32>(&[0; 8], 1).is_err());
    assert!(decode::<u8>(&[0; 3], 4).is_err());
}

#[test]
fn fixed_decode_rejects_a_count_that_overflows() {
    let err = decode::<f64>(&[0; 8], usize::MAX).unwrap_err();
    assert!(matches!(err, Error::Decode(m) if m.contains("overflow")));
}

#[test]
fn bool_decode_rejects_bytes_other_than_0_and_1() {
    let err = decode::<bool>(&[1, 0, 2], 3).unwrap_err();
    assert!(matches!(err, Error::Decode(m) if m.contains("element 2 is 2")));
}

#[test]
fn element_count_multiplies_dimensions() {
    assert_eq!(element_count(&[]), Some(1), "a scalar has one element");
    assert_eq!(element_count(&[2, 3, 4]), Some(24));
    assert_eq!(element_count(&[5, 0, 7]), Some(0));
}

#[test]
fn element_count_rejects_negative_dimensions_and_overflow() {
    assert_eq!(element_count(&[-1, 3]), None);
    assert_eq!(element_count(&[i64::MIN]), None);
    assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    assert_eq!(element_count(&[1 << 32, 1 << 32]), None);
    // A zero dimension does not excuse a negative one.
    assert_eq!(element_count(&[0, -1]), None);
}

#[test]
fn bytes_framing_is_length_prefixed() {
    let raw = encode_bytes(&["ab", "", "c"]).unwrap();
    assert_eq!(raw, [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0, 1, 0, 0, 0, b'c']);
    assert_eq!(
        decode_bytes(&raw, 3).unwrap(),
        [b"ab".to_vec(), vec![], b"c".to_vec()]
    );
}

#[test]
fn bytes_round_trip_empty_elements() {
    let elements = ["", "", ""];
    let raw = encode_bytes(&elements).unwrap();
    assert_eq!(raw, [0; 12]);
    assert_eq!(decode_bytes(&raw, 3).unwrap(), vec![Vec::<u8>::new(); 3]);
}

#[test]
fn bytes_round_trip_non_utf8_elements() {
    let elements: [&[u8]; 2] = [&[0xff, 0xfe, 0x00], &[0xc3]];
    let raw = encode_bytes(&elements).unwrap();
    assert_eq!(decode_bytes(&raw, 2).unwrap(), elements.map(<[u8]>::to_vec));
}

#[test]
fn bytes_decode_rejects_a_truncated_prefix() {
    let mut raw = encode_bytes(&["ab"]).unwrap();
    raw.extend_from_slice(&[1, 0]);
    let err = decode_bytes(&raw, 2).unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.contains("element 1 at byte 6: truncated length prefix (2 of 4 bytes)")),
        "{err}"
    );
}

#[test]
fn bytes_decode_rejects_a_prefix_claiming_more_than_present() {
    let raw = [5, 0, 0, 0, b'a', b'b'];
    let err = decode_bytes(&raw, 1).unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.contains("element 0 at byte 0 declares 5 bytes, but only 2 remain")),
        "{err}"
    );
    let huge = [0xff, 0xff, 0xff, 0xff, 0];
    assert!(decode_bytes(&huge, 1).is_err());
}

#[test]
fn bytes_decode_rejects_element_count_mismatch() {
    let raw = encode_bytes(&["a", "b"]).unwrap();
    let too_few = decode_bytes(&raw, 3).unwrap_err();
    assert!(matches!(&too_few, Error::Decode(m) if m.contains("should hold 3 elements, found 2")));
    let too_many = decode_bytes(&raw, 1).unwrap_err();
    assert!(
        matches!(&too_many, Error::Decode(m) if m.contains("should hold 1 elements, found more"))
    );
    assert!(decode_bytes(&[], 1).is_err());
}

#[test]
fn bytes_decode_does_not_trust_a_huge_count() {
    // Would abort the process if the count drove the allocation.
    let raw = encode_bytes(&["x"]).unwrap();
    assert!(decode_bytes(&raw, usize::MAX).is_err());
    assert!(decode_bytes(&[], usize::MAX).is_err());
}

#[test]
fn validate_raw_checks_fixed_sizes_and_bytes_streams() {
    assert!(validate_raw(DataType::Fp16, &[0; 6], 3).is_ok());
    assert!(validate_raw(DataType::Bf16, &[0; 5], 3).is_err());
    assert!(validate_raw(DataType::Fp64, &[0; 8], usize::MAX).is_err());
    let raw = encode_bytes(&["a", ""]).unwrap();
    assert!(validate_raw(DataType::Bytes, &raw, 2).is_ok());
    assert!(validate_raw(DataType::Bytes, &raw, 1).is_err());
    assert!(validate_raw(DataType::Bytes, &raw[..raw.len() - 1], 2).is_err());
    assert!(validate_raw(DataType::Bytes, &[], 0).is_ok());
}

#[cfg(feature = "half")]
#[test]
fn half_precision_round_trips_little_endian() {
    use half::{bf16, f16};
    assert_eq!(<f16 as Element>::DATATYPE, DataType::Fp16);
    assert_eq!(<bf16 as Element>::DATATYPE, DataType::Bf16);
    round_trip(
        &[f16::from_f32(1.0), f16::from_f32(-2.0)],
        &[0x00, 0x3c, 0x00, 0xc0],
    );
    round_trip(
        &[bf16::from_f32(1.0), bf16::from_f32(-2.0)],
        &[0x80, 0x3f, 0x00, 0xc0],
    );
    assert!(decode::<f16>(&[0, 0x3c, 0], 1).is_err());
    let nan = decode::<bf16>(&encode(&[bf16::NAN]), 1).unwrap();
    assert!(nan[0].is_nan());
}
