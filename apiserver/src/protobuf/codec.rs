//! Protobuf wire format <-> the JSON form the store keeps, driven by the schema.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use serde_json::{Map, Value};

use super::schema::MESSAGES;
use super::schema_types::{Field, Kind, Message, Presence};

/// What made a protobuf body unreadable, or a stored object unencodable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The bytes end inside a field.
    #[error("truncated protobuf message")]
    Truncated,
    /// A varint runs past its ten bytes.
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    /// A field's wire type is one protobuf does not define (or a group).
    #[error("unsupported wire type {wire} for field {tag}")]
    WireType {
        /// The field number.
        tag: u32,
        /// The wire type.
        wire: u8,
    },
    /// A field's value is not one its type holds.
    #[error("field {field}: {reason}")]
    Value {
        /// The field's JSON name.
        field: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// Messages nest deeper than any real object does.
    #[error("messages nested more than {MAX_DEPTH} deep (at {message})")]
    TooDeep {
        /// The message at which the limit was reached.
        message: &'static str,
    },
}

/// Nesting beyond any real object; a crafted body cannot recurse without bound.
const MAX_DEPTH: usize = 64;

type Result<T> = std::result::Result<T, CodecError>;

fn bad(field: &str, reason: impl Into<String>) -> CodecError {
    CodecError::Value {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A read-only cursor over protobuf bytes.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

/// One field occurrence: its number and its payload.
enum Payload<'b> {
    Varint(u64),
    /// A fixed 32- or 64-bit value: no served field has one, so it is skipped.
    Fixed,
    Bytes(&'b [u8]),
}

impl<'b> Reader<'b> {
    fn new(bytes: &'b [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in 0..10 {
            let byte = *self.bytes.get(self.at).ok_or(CodecError::Truncated)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << (7 * shift);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::VarintTooLong)
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8]> {
        let end = self.at.checked_add(n).ok_or(CodecError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(CodecError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn field(&mut self) -> Result<(u32, Payload<'b>)> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| CodecError::Truncated)?;
        let wire = (key & 7) as u8;
        let payload = match wire {
            0 => Payload::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Payload::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| CodecError::Truncated)?;
                Payload::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Payload::Fixed
            }
            _ => return Err(CodecError::WireType { tag, wire }),
        };
        Ok((tag, payload))
    }
}

/// Decodes message `index` of the schema from its wire bytes into its JSON form.
pub fn decode(index: usize, bytes: &[u8]) -> Result<Map<String, Value>> {
    decode_message(&MESSAGES[index], bytes, 0)
}

fn decode_message(message: &Message, bytes: &[u8], depth: usize) -> Result<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return Err(CodecError::TooDeep {
            message: message.name,
        });
    }
    let mut object = Map::new();
    let mut reader = Reader::new(bytes);
    while !reader.done() {
        let (tag, payload) = reader.field()?;
        // Unknown fields are skipped, as Go's generated decoders skip them.
        let Some(field) = message.fields.iter().find(|f| f.tag == tag) else {
            continue;
        };
        decode_field(field, payload, &mut object, depth)?;
    }
    Ok(object)
}

fn decode_field(
    field: &Field,
    payload: Payload<'_>,
    object: &mut Map<String, Value>,
    depth: usize,
) -> Result<()> {
    if let Kind::Map(value_kind) = &field.kind {
        let Payload::Bytes(entry) = payload else {
            return Err(bad(field.json, "a map entry must be length-delimited"));
        };
        let (key, value) = decode_entry(field, value_kind, entry, depth)?;
        let map = object
            .entry(field.json)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(map) = map {
            map.insert(key, value);
        }
        return Ok(());
    }
    if field.repeated {
        let mut values = Vec::new();
        match (payload, &field.kind) {
            // Packed scalars: several varints in one length-delimited field.
            (Payload::Bytes(packed), Kind::Bool | Kind::Int32 | Kind::Int64) => {
                let mut inner = Reader::new(packed);
                while !inner.done() {
                    values.push(scalar(field, Payload::Varint(inner.varint()?))?);
                }
            }
            (payload, _) => values.push(decode_value(field, &field.kind, payload, depth)?),
        }
        let list = object
            .entry(field.json)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.extend(values);
        }
        return Ok(());
    }
    let value = decode_value(field, &field.kind, payload, depth)?;
    match field.presence {
        Presence::Inline => {
            if let Value::Object(inner) = value {
                object.extend(inner);
            }
        }
        Presence::Always => {
            object.insert(field.json.to_string(), value);
        }
        Presence::Pointer if !value.is_null() => {
            object.insert(field.json.to_string(), value);
        }
        Presence::OmitZero if !is_zero(&value) => {
            object.insert(field.json.to_string(), value);
        }
        Presence::Pointer | Presence::OmitZero => {
            object.remove(field.json);
        }
    }
    Ok(())
}

/// Go's `omitempty` zero: "", 0, false, an empty object; and a zero time (null).
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Object(map) => map.is_empty(),
        Value::Array(list) => list.is_empty(),
    }
}

fn decode_entry(
    field: &Field,
    value_kind: &Kind,
    bytes: &[u8],
    depth: usize,
) -> Result<(String, Value)> {
    let mut key = String::new();
    let mut value = None;
    let mut reader = Reader::new(bytes);
    while !reader.done() {
        match reader.field()? {
            (1, Payload::Bytes(k)) => key = utf8(field.json, k)?,
            (2, payload) => value = Some(decode_value(field, value_kind, payload, depth)?),
            _ => {}
        }
    }
    let value = match value {
        Some(value) => value,
        None => zero_of(value_kind),
    };
    Ok((key, value))
}

/// The JSON of a map value that the wire left out (proto3 maps omit default values).
fn zero_of(kind: &Kind) -> Value {
    match kind {
        Kind::String | Kind::Bytes | Kind::Quantity => Value::String(String::new()),
        Kind::Message(_) => Value::Object(Map::new()),
        _ => Value::Null,
    }
}

fn utf8(field: &str, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad(field, "a string is not valid UTF-8"))
}

fn scalar(field: &Field, payload: Payload<'_>) -> Result<Value> {
    match (&field.kind, payload) {
        (Kind::Bool, Payload::Varint(v)) => Ok(Value::Bool(v != 0)),
        // int32 travels sign-extended to 64 bits: truncating recovers it.
        (Kind::Int32, Payload::Varint(v)) => Ok(Value::from(v as i32)),
        (Kind::Int64, Payload::Varint(v)) => Ok(Value::from(v as i64)),
        (Kind::String, Payload::Bytes(b)) => Ok(Value::String(utf8(field.json, b)?)),
        (Kind::Bytes, Payload::Bytes(b)) => Ok(Value::String(STANDARD.encode(b))),
        _ => Err(bad(field.json, "the wire type does not match the field")),
    }
}

fn decode_value(field: &Field, kind: &Kind, payload: Payload<'_>, depth: usize) -> Result<Value> {
    let bytes = match payload {
        Payload::Bytes(bytes) => bytes,
        scalar_payload if matches!(kind, Kind::Bool | Kind::Int32 | Kind::Int64) => {
            return scalar(field, scalar_payload);
        }
        _ => return Err(bad(field.json, "the wire type does not match the field")),
    };
    match kind {
        Kind::String => Ok(Value::String(utf8(field.json, bytes)?)),
        Kind::Bytes => Ok(Value::String(STANDARD.encode(bytes))),
        Kind::Bool | Kind::Int32 | Kind::Int64 => {
            Err(bad(field.json, "a scalar is length-delimited"))
        }
        Kind::Map(_) => Err(bad(field.json, "a map inside a map")),
        Kind::Message(index) => Ok(Value::Object(decode_message(
            &MESSAGES[*index],
            bytes,
            depth + 1,
        )?)),
        Kind::Time => time(field, bytes, false),
        Kind::MicroTime => time(field, bytes, true),
        Kind::Quantity => {
            let mut text = String::new();
            each(bytes, |tag, payload| {
                if let (1, Payload::Bytes(b)) = (tag, payload) {
                    text = utf8(field.json, b)?;
                }
                Ok(())
            })?;
            Ok(Value::String(text))
        }
        Kind::IntOrString => {
            let (mut is_string, mut int, mut text) = (false, 0i32, String::new());
            each(bytes, |tag, payload| {
                match (tag, payload) {
                    (1, Payload::Varint(t)) => is_string = t == 1,
                    (2, Payload::Varint(v)) => int = v as i32,
                    (3, Payload::Bytes(b)) => text = utf8(field.json, b)?,
                    _ => {}
                }
                Ok(())
            })?;
            Ok(if is_string {
                Value::String(text)
            } else {
                Value::from(int)
            })
        }
        Kind::RawJson => {
            let mut raw: &[u8] = &[];
            each(bytes, |tag, payload| {
                if let (1, Payload::Bytes(b)) = (tag, payload) {
                    raw = b;
                }
                Ok(())
            })?;
            if raw.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice(raw).map_err(|e| bad(field.json, format!("embedded JSON: {e}")))
        }
    }
}

/// Calls `visit` for each field of a small message.
fn each<'b>(bytes: &'b [u8], mut visit: impl FnMut(u32, Payload<'b>) -> Result<()>) -> Result<()> {
    let mut reader = Reader::new(bytes);
    while !reader.done() {
        let (tag, payload) = reader.field()?;
        visit(tag, payload)?;
    }
    Ok(())
}

/// metav1.Time and MicroTime. Go writes the zero time as an empty message (JSON null);
/// any other time, the Unix epoch included, has its fields. Time drops the nanoseconds on
/// reading, as Go's does, so protobuf and JSON writers store the same second.
fn time(field: &Field, bytes: &[u8], micro: bool) -> Result<Value> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let (mut seconds, mut nanos) = (0i64, 0i32);
    each(bytes, |tag, payload| {
        match (tag, payload) {
            (1, Payload::Varint(v)) => seconds = v as i64,
            (2, Payload::Varint(v)) => nanos = v as i32,
            _ => {}
        }
        Ok(())
    })?;
    let at = Timestamp::new(seconds, if micro { nanos } else { 0 })
        .map_err(|e| bad(field.json, format!("time out of range: {e}")))?;
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S.%6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(at.strftime(format).to_string()))
}

/// Encodes a JSON object as message `index` of the schema. Fields the schema does not
/// know are left out, as a Go client's types would drop them.
pub fn encode(index: usize, object: &Map<String, Value>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_message(&MESSAGES[index], object, &mut out, 0)?;
    Ok(out)
}

fn encode_message(
    message: &Message,
    object: &Map<String, Value>,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(CodecError::TooDeep {
            message: message.name,
        });
    }
    for field in message.fields {
        if field.presence == Presence::Inline {
            if let Kind::Message(index) = field.kind {
                let mut inner = Vec::new();
                encode_message(&MESSAGES[index], object, &mut inner, depth + 1)?;
                put_bytes(out, field.tag, &inner);
            }
            continue;
        }
        let Some(value) = object.get(field.json).filter(|v| !v.is_null()) else {
            continue;
        };
        if let Kind::Map(value_kind) = &field.kind {
            let map = value
                .as_object()
                .ok_or_else(|| bad(field.json, "expected an object"))?;
            for (key, item) in map {
                let mut entry = Vec::new();
                put_bytes(&mut entry, 1, key.as_bytes());
                encode_value(field, value_kind, 2, item, &mut entry, depth)?;
                put_bytes(out, field.tag, &entry);
            }
        } else if field.repeated {
            let list = value
                .as_array()
                .ok_or_else(|| bad(field.json, "expected a list"))?;
            for item in list {
                encode_value(field, &field.kind, field.tag, item, out, depth)?;
            }
        } else {
            encode_value(field, &field.kind, field.tag, value, out, depth)?;
        }
    }
    Ok(())
}

fn encode_value(
    field: &Field,
    kind: &Kind,
    tag: u32,
    value: &Value,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<()> {
    let text = || {
        value
            .as_str()
            .ok_or_else(|| bad(field.json, "expected a string"))
    };
    let int = || {
        value
            .as_i64()
            .ok_or_else(|| bad(field.json, "expected an integer"))
    };
    match kind {
        Kind::String => put_bytes(out, tag, text()?.as_bytes()),
        Kind::Bytes => {
            let bytes = STANDARD
                .decode(text()?)
                .map_err(|e| bad(field.json, format!("base64: {e}")))?;
            put_bytes(out, tag, &bytes);
        }
        Kind::Bool => {
            let b = value
                .as_bool()
                .ok_or_else(|| bad(field.json, "expected a boolean"))?;
            put_varint_field(out, tag, u64::from(b));
        }
        Kind::Int32 | Kind::Int64 => put_varint_field(out, tag, int()? as u64),
        Kind::Map(_) => return Err(bad(field.json, "a map inside a map")),
        Kind::Message(index) => {
            let object = value
                .as_object()
                .ok_or_else(|| bad(field.json, "expected an object"))?;
            let mut inner = Vec::new();
            encode_message(&MESSAGES[*index], object, &mut inner, depth + 1)?;
            put_bytes(out, tag, &inner);
        }
        Kind::Quantity => {
            let mut inner = Vec::new();
            put_bytes(&mut inner, 1, text()?.as_bytes());
            put_bytes(out, tag, &inner);
        }
        Kind::Time | Kind::MicroTime => {
            let at: Timestamp = text()?
                .parse()
                .map_err(|e| bad(field.json, format!("time: {e}")))?;
            let mut inner = Vec::new();
            put_varint_field(&mut inner, 1, at.as_second() as u64);
            if matches!(kind, Kind::MicroTime) {
                let micros = at.subsec_nanosecond() / 1000 * 1000;
                put_varint_field(&mut inner, 2, micros as u64);
            }
            put_bytes(out, tag, &inner);
        }
        Kind::IntOrString => {
            let mut inner = Vec::new();
            match value {
                Value::String(s) => {
                    put_varint_field(&mut inner, 1, 1);
                    put_bytes(&mut inner, 3, s.as_bytes());
                }
                Value::Number(n) => {
                    put_varint_field(&mut inner, 1, 0);
                    let v = n
                        .as_i64()
                        .ok_or_else(|| bad(field.json, "expected an integer"))?;
                    put_varint_field(&mut inner, 2, v as u64);
                }
                _ => return Err(bad(field.json, "expected a number or a string")),
            }
            put_bytes(out, tag, &inner);
        }
        Kind::RawJson => {
            let raw = serde_json::to_vec(value).map_err(|e| bad(field.json, e.to_string()))?;
            let mut inner = Vec::new();
            put_bytes(&mut inner, 1, &raw);
            put_bytes(out, tag, &inner);
        }
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint_field(out: &mut Vec<u8>, tag: u32, value: u64) {
    put_varint(out, u64::from(tag) << 3);
    put_varint(out, value);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(tag) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// runtime.Unknown, the envelope of every protobuf body: typeMeta (1: apiVersion 1,
/// kind 2), raw (2), contentEncoding (3), contentType (4).
pub struct Unknown<'b> {
    /// typeMeta.apiVersion.
    pub api_version: String,
    /// typeMeta.kind.
    pub kind: String,
    /// The object's own message.
    pub raw: &'b [u8],
    /// contentEncoding; "" for none.
    pub content_encoding: String,
    /// contentType; "" for protobuf.
    pub content_type: String,
}

/// Reads the envelope (after the magic).
pub fn decode_unknown(bytes: &[u8]) -> Result<Unknown<'_>> {
    let mut unknown = Unknown {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
        content_type: String::new(),
    };
    each(bytes, |tag, payload| {
        match (tag, payload) {
            (1, Payload::Bytes(type_meta)) => each(type_meta, |tag, payload| {
                match (tag, payload) {
                    (1, Payload::Bytes(b)) => unknown.api_version = utf8("apiVersion", b)?,
                    (2, Payload::Bytes(b)) => unknown.kind = utf8("kind", b)?,
                    _ => {}
                }
                Ok(())
            })?,
            (2, Payload::Bytes(raw)) => unknown.raw = raw,
            (3, Payload::Bytes(b)) => unknown.content_encoding = utf8("contentEncoding", b)?,
            (4, Payload::Bytes(b)) => unknown.content_type = utf8("contentType", b)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(unknown)
}

/// Appends runtime.Unknown around `raw`, with the empty contentEncoding and
/// contentType that Go writes.
pub fn encode_unknown(api_version: &str, kind: &str, raw: &[u8], out: &mut Vec<u8>) {
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    put_bytes(out, 1, &type_meta);
    put_bytes(out, 2, raw);
    put_bytes(out, 3, b"");
    put_bytes(out, 4, b"");
}

/// metav1.WatchEvent: type (1) and object (2), a RawExtension whose raw (1) is `object`.
pub fn encode_watch_event(event: &str, object: &[u8], out: &mut Vec<u8>) {
    put_bytes(out, 1, event.as_bytes());
    let mut raw = Vec::new();
    put_bytes(&mut raw, 1, object);
    put_bytes(out, 2, &raw);
}
