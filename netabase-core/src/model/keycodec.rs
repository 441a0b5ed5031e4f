//! An order-preserving byte encoding for key values.
//!
//! Stores keep records sorted by the bytes of their keys, and range and prefix scans walk
//! that order. This encoding makes byte order agree with the key type's own order: for two
//! values `a < b` of a key type built from the supported shapes, `encode(a) < encode(b)`
//! byte-wise. Only encoding is needed (a key is always recoverable from the record it
//! belongs to), which keeps this small; the general-purpose crates of this kind either
//! dropped serde or do not preserve order for strings, so it is written here.
//!
//! - `bool`, unsigned integers: big-endian, fixed width.
//! - signed integers: big-endian with the sign bit flipped.
//! - floats: IEEE bits, all bits flipped for negatives, the sign bit flipped otherwise.
//! - `char`: as `u32`.
//! - strings and byte strings: each `0x00` byte escaped as `0x00 0xFF`, terminated by
//!   `0x00 0x00`, so that a string sorts before its extensions.
//! - `Option`: `0x00` for `None`, `0x01` then the value for `Some`.
//! - sequences and maps: `0x01` before each element, `0x00` at the end.
//! - tuples and structs: fields in order; unit values: nothing.
//! - enums: the variant index as a big-endian `u32`, then the payload.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::ser::{self, Serialize};

/// Why a value could not be encoded as a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode key: {0}")]
pub struct KeyEncodeError(String);

impl ser::Error for KeyEncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        KeyEncodeError(msg.to_string())
    }
}

/// Encodes `value` so that byte order follows the value's order.
pub fn encode_key<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, KeyEncodeError> {
    // Built on the stack and copied once into a vector of the right size, rather than
    // grown step by step.
    let mut encoder = KeyEncoder {
        out: StackBuf::new(),
        open_end: None,
    };
    value.serialize(&mut encoder)?;
    Ok(encoder.out.into_vec())
}

/// Appends the encoding of `value` ([`encode_key`]) to `out`, so that a caller can reuse one
/// buffer for many keys. On error, `out` holds what was appended before the failure.
pub fn encode_key_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), KeyEncodeError> {
    let mut encoder = KeyEncoder {
        out: core::mem::take(out),
        open_end: None,
    };
    let result = value.serialize(&mut encoder);
    *out = encoder.out;
    result
}

/// Calls `f` with the encoding of `value` ([`encode_key`]), built in a buffer on the stack
/// when it is at most [`INLINE_KEY_LEN`] bytes long, so that looking a short key up (an
/// integer, a short string) allocates nothing.
#[inline]
pub fn with_encoded_key<T: Serialize + ?Sized, R>(
    value: &T,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, KeyEncodeError> {
    let mut encoder = KeyEncoder {
        out: StackBuf::new(),
        open_end: None,
    };
    value.serialize(&mut encoder)?;
    Ok(f(encoder.out.as_slice()))
}

/// Encodes `value` as a prefix: like [`encode_key`], but when the encoding ends with a
/// string or byte-string terminator, the terminator is left off, so that the result is a
/// byte prefix of every key whose last string component starts with the given one.
pub fn encode_key_prefix<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, KeyEncodeError> {
    let mut encoder = KeyEncoder {
        out: Vec::new(),
        open_end: None,
    };
    value.serialize(&mut encoder)?;
    if encoder.open_end == Some(encoder.out.len()) {
        encoder.out.truncate(encoder.out.len() - 2);
    }
    Ok(encoder.out)
}

/// The longest key encoding that [`with_encoded_key`] builds on the stack.
pub const INLINE_KEY_LEN: usize = 40;

/// Where the encoder writes.
trait Output {
    fn push(&mut self, byte: u8);
    fn extend(&mut self, bytes: &[u8]);
    fn len(&self) -> usize;
}

impl Output for Vec<u8> {
    #[inline]
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte);
    }
    #[inline]
    fn extend(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    #[inline]
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Bytes on the stack, moved to the heap once they outgrow [`INLINE_KEY_LEN`].
struct StackBuf {
    inline: [u8; INLINE_KEY_LEN],
    /// Bytes used in `inline` (while `heap` is unused).
    len: usize,
    /// All the bytes, once they outgrew `inline`.
    heap: Option<Vec<u8>>,
}

impl StackBuf {
    #[inline]
    fn new() -> Self {
        StackBuf {
            inline: [0; INLINE_KEY_LEN],
            len: 0,
            heap: None,
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match &self.heap {
            Some(heap) => heap,
            None => &self.inline[..self.len],
        }
    }

    #[inline]
    fn into_vec(self) -> Vec<u8> {
        match self.heap {
            Some(heap) => heap,
            None => self.inline[..self.len].to_vec(),
        }
    }

    #[cold]
    fn spill(&mut self, bytes: &[u8]) {
        let heap = self.heap.get_or_insert_with(|| {
            let mut heap = Vec::with_capacity(2 * INLINE_KEY_LEN + bytes.len());
            heap.extend_from_slice(&self.inline[..self.len]);
            heap
        });
        heap.extend_from_slice(bytes);
    }
}

impl Output for StackBuf {
    #[inline]
    fn push(&mut self, byte: u8) {
        self.extend(&[byte]);
    }
    #[inline]
    fn extend(&mut self, bytes: &[u8]) {
        if self.heap.is_none()
            && let Some(slot) = self.inline.get_mut(self.len..self.len + bytes.len())
        {
            slot.copy_from_slice(bytes);
            self.len += bytes.len();
            return;
        }
        self.spill(bytes);
    }
    #[inline]
    fn len(&self) -> usize {
        match &self.heap {
            Some(heap) => heap.len(),
            None => self.len,
        }
    }
}

struct KeyEncoder<O> {
    out: O,
    /// Length of `out` right after the last string terminator was written.
    open_end: Option<usize>,
}

impl<O: Output> KeyEncoder<O> {
    fn bytes(&mut self, bytes: &[u8]) {
        // Runs without a zero byte are copied whole.
        let mut rest = bytes;
        while let Some(zero) = rest.iter().position(|&b| b == 0) {
            self.out.extend(&rest[..zero]);
            self.out.extend(&[0, 0xFF]);
            rest = &rest[zero + 1..];
        }
        self.out.extend(rest);
        self.out.extend(&[0, 0]);
        self.open_end = Some(self.out.len());
    }
}

impl<'a, O: Output> ser::Serializer for &'a mut KeyEncoder<O> {
    type Ok = ();
    type Error = KeyEncodeError;
    type SerializeSeq = Seq<'a, O>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Seq<'a, O>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), KeyEncodeError> {
        self.out.push(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), KeyEncodeError> {
        self.out.push((v as u8) ^ 0x80);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), KeyEncodeError> {
        self.out.extend(&((v as u16) ^ (1 << 15)).to_be_bytes());
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), KeyEncodeError> {
        self.out.extend(&((v as u32) ^ (1 << 31)).to_be_bytes());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), KeyEncodeError> {
        self.out.extend(&((v as u64) ^ (1 << 63)).to_be_bytes());
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), KeyEncodeError> {
        self.out.extend(&((v as u128) ^ (1 << 127)).to_be_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), KeyEncodeError> {
        self.out.push(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), KeyEncodeError> {
        self.out.extend(&v.to_be_bytes());
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), KeyEncodeError> {
        self.out.extend(&v.to_be_bytes());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), KeyEncodeError> {
        self.out.extend(&v.to_be_bytes());
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), KeyEncodeError> {
        self.out.extend(&v.to_be_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), KeyEncodeError> {
        let bits = v.to_bits();
        let bits = if bits >> 31 == 1 {
            !bits
        } else {
            bits ^ (1 << 31)
        };
        self.out.extend(&bits.to_be_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), KeyEncodeError> {
        let bits = v.to_bits();
        let bits = if bits >> 63 == 1 {
            !bits
        } else {
            bits ^ (1 << 63)
        };
        self.out.extend(&bits.to_be_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), KeyEncodeError> {
        self.serialize_u32(u32::from(v))
    }
    fn serialize_str(self, v: &str) -> Result<(), KeyEncodeError> {
        self.bytes(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), KeyEncodeError> {
        self.bytes(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), KeyEncodeError> {
        self.out.push(0);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), KeyEncodeError> {
        self.out.push(1);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), KeyEncodeError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), KeyEncodeError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
    ) -> Result<(), KeyEncodeError> {
        self.serialize_u32(index)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), KeyEncodeError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), KeyEncodeError> {
        self.serialize_u32(index)?;
        value.serialize(self)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a, O>, KeyEncodeError> {
        Ok(Seq(self))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self, KeyEncodeError> {
        Ok(self)
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self, KeyEncodeError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, KeyEncodeError> {
        self.serialize_u32(index)?;
        Ok(self)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Seq<'a, O>, KeyEncodeError> {
        Ok(Seq(self))
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, KeyEncodeError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, KeyEncodeError> {
        self.serialize_u32(index)?;
        Ok(self)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), KeyEncodeError> {
        self.serialize_str(&value.to_string())
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Sequence and map state: a `0x01` marker before each element, `0x00` at the end.
struct Seq<'a, O>(&'a mut KeyEncoder<O>);

impl<O: Output> ser::SerializeSeq for Seq<'_, O> {
    type Ok = ();
    type Error = KeyEncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.0.out.push(1);
        value.serialize(&mut *self.0)
    }
    fn end(self) -> Result<(), Self::Error> {
        self.0.out.push(0);
        Ok(())
    }
}

impl<O: Output> ser::SerializeMap for Seq<'_, O> {
    type Ok = ();
    type Error = KeyEncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        self.0.out.push(1);
        key.serialize(&mut *self.0)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        value.serialize(&mut *self.0)
    }
    fn end(self) -> Result<(), Self::Error> {
        self.0.out.push(0);
        Ok(())
    }
}

macro_rules! fields {
    ($($trait:ident :: $method:ident),*) => {$(
        impl<O: Output> ser::$trait for &mut KeyEncoder<O> {
            type Ok = ();
            type Error = KeyEncodeError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Self::Error> {
                Ok(())
            }
        }
    )*};
}
fields!(
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

macro_rules! named_fields {
    ($($trait:ident),*) => {$(
        impl<O: Output> ser::$trait for &mut KeyEncoder<O> {
            type Ok = ();
            type Error = KeyEncodeError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _key: &'static str,
                value: &T,
            ) -> Result<(), Self::Error> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Self::Error> {
                Ok(())
            }
        }
    )*};
}
named_fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;
    use proptest::prelude::*;

    fn ordered<T: Serialize + Ord + core::fmt::Debug>(a: &T, b: &T) {
        let (ea, eb) = (encode_key(a).unwrap(), encode_key(b).unwrap());
        assert_eq!(a.cmp(b), ea.cmp(&eb), "{a:?} vs {b:?}: {ea:?} vs {eb:?}");
    }

    proptest! {
        #[test]
        fn integers_keep_their_order(a: i64, b: i64, c: u32, d: u32, e: i8, f: i8) {
            ordered(&a, &b);
            ordered(&c, &d);
            ordered(&e, &f);
        }

        #[test]
        fn strings_and_bytes_keep_their_order(a: String, b: String, c: Vec<u8>, d: Vec<u8>) {
            ordered(&a, &b);
            ordered(&serde_bytes_like(&c), &serde_bytes_like(&d));
        }

        #[test]
        fn composites_keep_their_order(
            a: (String, u16, Option<i32>), b: (String, u16, Option<i32>),
            c: Vec<String>, d: Vec<String>,
        ) {
            ordered(&a, &b);
            ordered(&c, &d);
        }

        #[test]
        fn a_string_prefix_is_a_byte_prefix(s: String, rest: String) {
            let whole = format!("{s}{rest}");
            let prefix = encode_key_prefix(&s).unwrap();
            prop_assert!(encode_key(&whole).unwrap().starts_with(&prefix));
        }

        #[test]
        fn floats_keep_their_order(a in -1e9f64..1e9, b in -1e9f64..1e9) {
            let (ea, eb) = (encode_key(&a).unwrap(), encode_key(&b).unwrap());
            prop_assert_eq!(a.partial_cmp(&b).unwrap(), ea.cmp(&eb));
        }
    }

    /// Bytes serialised element by element (a `Vec<u8>` is a sequence to serde).
    fn serde_bytes_like(v: &[u8]) -> Vec<u8> {
        v.to_vec()
    }

    use alloc::format;

    #[test]
    fn encoding_into_a_buffer_appends() {
        let mut buf = vec![9u8];
        encode_key_into(&(1u16, "a"), &mut buf).unwrap();
        let mut expected = vec![9u8];
        expected.extend_from_slice(&encode_key(&(1u16, "a")).unwrap());
        assert_eq!(buf, expected);
    }

    #[test]
    fn keys_built_on_the_stack_match_keys_built_on_the_heap() {
        let long = "x\0y".repeat(30);
        let values: [&dyn Fn() -> (Vec<u8>, Vec<u8>); 5] = [
            &|| stack_and_heap(&7u64),
            &|| stack_and_heap(&"a\0b"),
            &|| stack_and_heap(&(3u16, "chat/general", Some(-4i32))),
            &|| stack_and_heap(&long),
            &|| stack_and_heap(&vec![String::from("x"); 50]),
        ];
        for value in values {
            let (stack, heap) = value();
            assert_eq!(stack, heap);
        }
        assert!(encode_key(&long).unwrap().len() > INLINE_KEY_LEN);
    }

    fn stack_and_heap<T: Serialize + ?Sized>(value: &T) -> (Vec<u8>, Vec<u8>) {
        let stack = with_encoded_key(value, <[u8]>::to_vec).unwrap();
        (stack, encode_key(value).unwrap())
    }

    proptest! {
        #[test]
        fn stack_keys_agree_with_heap_keys(a: (String, u64, Vec<u8>), b in ".{0,60}") {
            let (s, h) = stack_and_heap(&a);
            prop_assert_eq!(s, h);
            let (s, h) = stack_and_heap(&b);
            prop_assert_eq!(s, h);
        }
    }

    #[test]
    fn prefix_of_a_tuple_ending_in_a_string() {
        let key = encode_key(&(7u32, "chat/general")).unwrap();
        let prefix = encode_key_prefix(&(7u32, "chat/")).unwrap();
        assert!(key.starts_with(&prefix));
        let other = encode_key(&(8u32, "chat/general")).unwrap();
        assert!(!other.starts_with(&prefix));
        assert_eq!(encode_key(&()).unwrap(), vec![]);
    }
}
