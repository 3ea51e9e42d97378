//! Working with decoded values: typed accessors, display, conversions and a dict builder.
use super::Value;
use std::collections::BTreeMap;
use std::fmt;

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The byte string as UTF-8, `None` if it is not a string or not valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks a key up when `self` is a dict; `None` for a missing key or a non-dict.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&Value> {
        self.as_dict().and_then(|d| d.get(key.as_ref()))
    }

    /// A short name of the variant, for error messages ("expected a list, got int").
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Bytes(_) => "string",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
        }
    }

    /// Starts a dict builder: `Value::dict().with("port", 6881).with("v", "shoal").build()`.
    pub fn dict() -> DictBuilder {
        DictBuilder::default()
    }
}

impl fmt::Display for Value {
    /// Debug-friendly text: strings shown lossily, long strings elided.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Bytes(b) if b.len() > 64 => write!(f, "<{} bytes>", b.len()),
            Value::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::List(items) => f.debug_list().entries(items.iter().map(DisplayAsDebug)).finish(),
            Value::Dict(map) => {
                f.debug_map().entries(map.iter().map(|(k, v)| (String::from_utf8_lossy(k), DisplayAsDebug(v)))).finish()
            }
        }
    }
}

struct DisplayAsDebug<'a>(&'a Value);
impl fmt::Debug for DisplayAsDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0, f)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(i64::from(n))
    }
}
impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Int(i64::from(n))
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Bytes(s.as_bytes().to_vec())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Bytes(s.into_bytes())
    }
}
impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Bytes(b.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}
impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}
impl From<BTreeMap<Vec<u8>, Value>> for Value {
    fn from(map: BTreeMap<Vec<u8>, Value>) -> Self {
        Value::Dict(map)
    }
}

/// Builds a dict value; later keys replace earlier equal keys.
#[derive(Debug, Clone, Default)]
pub struct DictBuilder(BTreeMap<Vec<u8>, Value>);

impl DictBuilder {
    pub fn with(mut self, key: impl AsRef<[u8]>, value: impl Into<Value>) -> Self {
        self.0.insert(key.as_ref().to_vec(), value.into());
        self
    }

    /// Inserts only when `value` is `Some`.
    pub fn with_opt<V: Into<Value>>(self, key: impl AsRef<[u8]>, value: Option<V>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    pub fn build(self) -> Value {
        Value::Dict(self.0)
    }

    pub fn into_map(self) -> BTreeMap<Vec<u8>, Value> {
        self.0
    }
}
