//! Unit and property tests of the decoder and encoder.
use super::*;
use proptest::prelude::*;

fn kind(input: &[u8]) -> ErrorKind {
    decode(input).expect_err("should fail").kind
}

#[test]
fn round_trips_simple_values() {
    let v = Value::dict()
        .with("a", 1i64)
        .with("b", "x")
        .with("c", vec![Value::Int(-5), Value::from("yz"), Value::List(vec![])])
        .with("d", Value::dict().build())
        .build();
    let bytes = encode(&v);
    assert_eq!(bytes, b"d1:ai1e1:b1:x1:cli-5e2:yzlee1:ddee");
    assert_eq!(decode(&bytes), Ok(v));
}

#[test]
fn integer_extremes() {
    assert_eq!(decode(b"i0e"), Ok(Value::Int(0)));
    assert_eq!(decode(b"i9223372036854775807e"), Ok(Value::Int(i64::MAX)));
    assert_eq!(decode(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
    assert_eq!(kind(b"i9223372036854775808e"), ErrorKind::IntOverflow);
    assert_eq!(kind(b"i-9223372036854775809e"), ErrorKind::IntOverflow);
}

#[test]
fn rejects_non_canonical_integers() {
    for bad in [&b"i-0e"[..], b"i03e", b"i-e", b"ie", b"i-03e"] {
        assert_eq!(kind(bad), ErrorKind::NonCanonicalInt, "{bad:?}");
    }
    assert_eq!(kind(b"i1"), ErrorKind::UnexpectedEof);
    assert_eq!(kind(b"i1.5e"), ErrorKind::UnexpectedByte('.'));
    assert_eq!(kind(b"i+1e"), ErrorKind::UnexpectedByte('+'));
}

#[test]
fn rejects_bad_string_lengths() {
    assert_eq!(kind(b"03:abc"), ErrorKind::NonCanonicalLength);
    assert_eq!(kind(b"999999999999:x"), ErrorKind::StringTooLong { len: 999_999_999_999, remaining: 1 });
    assert!(matches!(kind(b"99999999999999999999999999:"), ErrorKind::StringTooLong { .. }));
    assert!(matches!(kind(b"5:abc"), ErrorKind::StringTooLong { len: 5, remaining: 3 }));
    assert_eq!(kind(b"3"), ErrorKind::UnexpectedEof);
}

#[test]
fn rejects_unsorted_and_duplicate_keys() {
    let e = decode(b"d1:bi1e1:ai2ee").unwrap_err();
    assert_eq!(e.offset, 7);
    assert_eq!(e.kind, ErrorKind::UnsortedKeys { prev: "b".into(), key: "a".into() });
    assert!(e.to_string().contains("not sorted"));
    assert_eq!(kind(b"d1:ai1e1:ai2ee"), ErrorKind::DuplicateKey { key: "a".into() });
    assert_eq!(kind(b"di1ei2ee"), ErrorKind::KeyNotString);
}

#[test]
fn rejects_trailing_bytes_and_eof() {
    assert_eq!(kind(b"i1ei2e"), ErrorKind::TrailingBytes);
    assert_eq!(kind(b""), ErrorKind::UnexpectedEof);
    assert_eq!(kind(b"l"), ErrorKind::UnexpectedEof);
    assert_eq!(kind(b"d1:a"), ErrorKind::UnexpectedEof);
    assert_eq!(kind(b"x"), ErrorKind::UnexpectedByte('x'));
}

#[test]
fn limits_depth_size_and_items() {
    let deep = vec![b'l'; 100_000];
    assert_eq!(kind(&deep), ErrorKind::TooDeep(64));
    let mut ok = vec![b'l'; 64];
    ok.extend(vec![b'e'; 64]);
    assert!(decode(&ok).is_ok());
    let small = Limits { max_depth: 4, max_input: 8, max_items: 2 };
    assert!(matches!(
        decode_with_limits(b"123456789", &small).unwrap_err().kind,
        ErrorKind::TooLarge { len: 9, max: 8 }
    ));
    assert_eq!(decode_with_limits(b"li1ei2ee", &small).unwrap_err().kind, ErrorKind::TooManyItems(2));
}

#[test]
fn spans_point_at_raw_values() {
    let input = b"d4:infod1:xi1ee3:zzz3:abce";
    let sd = decode_dict_with_spans(input, &Limits::default()).unwrap();
    assert_eq!(&input[sd.spans[&b"info"[..]].clone()], b"d1:xi1ee");
    assert_eq!(&input[sd.spans[&b"zzz"[..]].clone()], b"3:abc");
    assert_eq!(decode_dict_with_spans(b"li1ee", &Limits::default()).unwrap_err().kind, ErrorKind::NotADict);
    assert_eq!(decode_dict_with_spans(&[b'l'; 1000], &Limits::default()).unwrap_err().kind, ErrorKind::TooDeep(64));
}

#[test]
fn prefix_decoding_reports_length() {
    let (v, used) = decode_prefix(b"d1:ai1eeRAW", &Limits::MESSAGE).unwrap();
    assert_eq!(v.get("a").and_then(Value::as_int), Some(1));
    assert_eq!(used, 8);
}

#[test]
fn helpers() {
    let v = Value::dict().with("peers", &b"\x01\x02"[..]).with_opt("none", None::<i64>).build();
    assert_eq!(v.get("peers").and_then(Value::as_bytes), Some(&b"\x01\x02"[..]));
    assert!(v.get("none").is_none());
    assert_eq!(v.kind_name(), "dict");
    assert_eq!(Value::Int(3).get("x"), None);
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Int),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 0..8), inner, 0..8)
                .prop_map(Value::Dict),
        ]
    })
}

proptest! {
    #[test]
    fn prop_round_trip(v in arb_value()) {
        let bytes = encode(&v);
        prop_assert_eq!(decode(&bytes), Ok(v));
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = decode_dict_with_spans(&bytes, &Limits::default());
    }

    #[test]
    fn prop_bencode_like_bytes_never_panic(
        parts in proptest::collection::vec(
            prop_oneof![Just(&b"l"[..]), Just(&b"d"[..]), Just(&b"e"[..]), Just(&b"i"[..]),
                        Just(&b"1:"[..]), Just(&b"0"[..]), Just(&b"-"[..]), Just(&b"3:abc"[..])],
            0..64)
    ) {
        let bytes: Vec<u8> = parts.concat();
        if let Ok(v) = decode(&bytes) {
            // Whatever the strict decoder accepts is canonical: it re-encodes to itself.
            prop_assert_eq!(encode(&v), bytes);
        }
    }
}
