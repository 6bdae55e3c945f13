//! The shape of the generated protobuf schema (`schema.rs`).

/// One message: its upstream definition name and its fields.
#[derive(Debug)]
pub struct Message {
    /// The definition's name (`io.k8s.api.core.v1.PersistentVolume`).
    pub name: &'static str,
    /// Its fields, in the order the JSON form lists them.
    pub fields: &'static [Field],
}

/// One field: its number on the wire, its JSON name, what it holds, and when its value
/// appears in the JSON form.
#[derive(Debug)]
pub struct Field {
    /// The field number.
    pub tag: u32,
    /// The JSON name; "" for an inline struct.
    pub json: &'static str,
    /// What a value holds.
    pub kind: Kind,
    /// A list of values (`repeated` on the wire, an array in JSON).
    pub repeated: bool,
    /// When the JSON form carries the value.
    pub presence: Presence,
}

/// What a field's value holds.
#[derive(Debug)]
pub enum Kind {
    /// A string.
    String,
    /// Bytes; base64 in JSON.
    Bytes,
    /// A bool.
    Bool,
    /// An int32.
    Int32,
    /// An int64.
    Int64,
    /// Another message, by its index in `MESSAGES`.
    Message(usize),
    /// `map<string, V>`: entries of key 1 and value 2.
    Map(&'static Kind),
    /// metav1.Time: seconds and nanos; RFC 3339 in whole seconds in JSON.
    Time,
    /// metav1.MicroTime: RFC 3339 with microseconds in JSON.
    MicroTime,
    /// resource.Quantity: its string.
    Quantity,
    /// intstr.IntOrString: a number or a string in JSON.
    IntOrString,
    /// runtime.RawExtension, metav1.FieldsV1: JSON bytes, embedded as they are.
    RawJson,
}

/// When a decoded value is written into the JSON form. Go writes every non-pointer
/// field on the wire, zero or not, while its JSON omits zero values of `omitempty`
/// fields: a zero there means "unset", and is dropped so defaulting sees it unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// `omitempty`, not a pointer: a zero value is no value.
    OmitZero,
    /// A Go pointer: present on the wire means set, even to a zero value
    /// (`storageClassName: ""`, `attachRequired: false`).
    Pointer,
    /// Required (no `omitempty`): always written.
    Always,
    /// An embedded struct (`json:",inline"`): its fields are the parent's.
    Inline,
}
