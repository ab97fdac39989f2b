//! Values as a file holds them, for models that report every problem at once.
//!
//! serde stops at the first value of the wrong type; the rules and routing files are instead
//! validated after deserialization, so that every problem is reported in one go and names what
//! the file says. A field that may hold anything is a [`Lenient`]: the expected type, or the YAML
//! value found instead. Unknown keys are collected (a `#[serde(flatten)]` [`serde_yaml::Mapping`],
//! in file order) to be reported as warnings. A mapping whose keys are data (table names) is an
//! [`Entries`], which keeps the file order.
//!
//! Writers (the operator) build the typed variants only; `From<T>` makes that short.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml::Value;

/// A value of type `T`, or whatever else the file holds at that place.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Lenient<T> {
    /// The value has the expected type.
    Typed(T),
    /// The value the file holds instead (reported by validation).
    Other(Value),
}

impl<T> From<T> for Lenient<T> {
    fn from(value: T) -> Self {
        Lenient::Typed(value)
    }
}

/// `#[serde(default, deserialize_with = "present")]`: a key written with a null value is
/// `Some(Lenient::Other(Null))` (a problem where null is not allowed) rather than absent.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Lenient<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Lenient::deserialize(deserializer).map(Some)
}

/// `value` with every YAML tag removed, at any depth and in keys too: `!secret x` is read as
/// `x`. The models read what a tagged value holds; serde's untagged enums ([`Lenient`]) and
/// flattened structs cannot read a tagged value at all (they fail the whole document with
/// "untagged and internally tagged enums do not support enum input"). Two keys that only their
/// tags told apart become one, the later value kept.
pub fn untag(value: Value) -> Value {
    match value {
        Value::Tagged(tagged) => untag(tagged.value),
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(untag).collect()),
        Value::Mapping(map) => {
            Value::Mapping(map.into_iter().map(|(k, v)| (untag(k), untag(v))).collect())
        }
        other => other,
    }
}

/// A YAML mapping in file order, keys and values read as `K` and `V`. (The documents are parsed
/// into a [`Value`] first, which rejects duplicate keys.)
#[derive(Clone, Debug, PartialEq)]
pub struct Entries<K, V>(pub Vec<(K, V)>);

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<K, V> FromIterator<(K, V)> for Entries<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Entries(iter.into_iter().collect())
    }
}

impl<'a, K, V> IntoIterator for &'a Entries<K, V> {
    type Item = &'a (K, V);
    type IntoIter = std::slice::Iter<'a, (K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Entries<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<K, V>(PhantomData<(K, V)>);

        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<K, V> {
            type Value = Entries<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

impl<K: Serialize, V: Serialize> Serialize for Entries<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A scalar as pg_flo reads it into a string (`18` -> "18", `true` -> "true").
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// A YAML number, printed as written (`100.0` stays "100.0").
    Number(serde_yaml::Number),
    /// A string.
    String(String),
}

impl Scalar {
    /// The scalar's text.
    pub fn text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Number(n) => n.to_string(),
            Scalar::String(s) => s.clone(),
        }
    }
}

impl From<String> for Scalar {
    fn from(s: String) -> Self {
        Scalar::String(s)
    }
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Scalar::String(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Doc {
        #[serde(default)]
        a: Option<Lenient<u32>>,
        #[serde(default, deserialize_with = "present")]
        b: Option<Lenient<bool>>,
        #[serde(default)]
        m: Option<Lenient<Entries<Lenient<String>, Lenient<Scalar>>>>,
        #[serde(flatten)]
        unknown: serde_yaml::Mapping,
    }

    fn doc(yaml: &str) -> Doc {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        serde_yaml::from_value(value).unwrap()
    }

    #[test]
    fn typed_other_and_unknown_keys_in_file_order() {
        let d = doc("a: x\nb: null\nz: 1\nm: {t2: 1.50, 3: true, t1: s}\ny: 2\n");
        assert_eq!(d.a, Some(Lenient::Other(Value::String("x".into()))));
        assert_eq!(d.b, Some(Lenient::Other(Value::Null)));
        let keys: Vec<_> = d.unknown.keys().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(keys, ["z", "y"]);
        let Some(Lenient::Typed(m)) = d.m else {
            panic!("{:?}", d.m)
        };
        let texts: Vec<String> =
            m.0.iter()
                .map(|(k, v)| match (k, v) {
                    (Lenient::Typed(k), Lenient::Typed(v)) => format!("{k}={}", v.text()),
                    (Lenient::Other(k), Lenient::Typed(v)) => format!("{k:?}={}", v.text()),
                    other => panic!("{other:?}"),
                })
                .collect();
        assert_eq!(texts, ["t2=1.5", "Number(3)=true", "t1=s"]);
        let d = doc("a: 3\n");
        assert_eq!((d.a, d.b), (Some(Lenient::Typed(3)), None));
    }

    #[test]
    fn tags_are_removed_at_every_depth() {
        let d: Doc = serde_yaml::from_value(untag(
            serde_yaml::from_str("a: !n 3\nm: !m {!k t: !v [1]}\n").unwrap(),
        ))
        .unwrap();
        assert_eq!(d.a, Some(Lenient::Typed(3)));
        let Some(Lenient::Typed(m)) = d.m else {
            panic!("{:?}", d.m)
        };
        assert_eq!(m.0[0].0, Lenient::Typed("t".to_owned()));
    }

    #[test]
    fn entries_serialize_in_order() {
        let e: Entries<&str, u8> = [("b", 1), ("a", 2)].into_iter().collect();
        assert_eq!(serde_yaml::to_string(&e).unwrap(), "b: 1\na: 2\n");
        assert_eq!(Scalar::from("18").text(), "18");
    }
}
