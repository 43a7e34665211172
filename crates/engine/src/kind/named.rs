//! [`Named`]: the ordered JSON object several kinds hold.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON object whose keys keep the order they were written in: a task's environment in the
/// order expand writes it (the plan's JSON shows it so; a map would sort them), a table's keys
/// the partition key first, a web ACL's rules and response bodies.
/// Equal when equal as JSON objects, whatever the order (ECS may list an environment otherwise).
#[derive(Debug, Clone)]
pub struct Named<V>(pub Vec<(String, V)>);

impl<V> Named<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Sets `name`: in its place when it is there, else last (as `object["name"] = …` does).
    pub fn set(&mut self, name: &str, value: impl Into<V>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl<V> Default for Named<V> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<K: Into<String>, V> FromIterator<(K, V)> for Named<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut named = Named::default();
        for (k, v) in iter {
            named.0.push((k.into(), v));
        }
        named
    }
}

impl<V: PartialEq> PartialEq for Named<V> {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<V: Serialize> Serialize for Named<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Named<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = Named<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<V>, A::Error> {
                let mut named = Named::default();
                while let Some(entry) = map.next_entry()? {
                    named.0.push(entry);
                }
                Ok(named)
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Val;
    use serde_json::json;

    #[test]
    fn named_keeps_its_order_and_compares_as_json_objects_do() {
        let v = json!({ "B": "2", "A": { "$ref": "x.y" } });
        let named: Named<Val<String>> = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_string(&named).unwrap(), r#"{"B":"2","A":{"$ref":"x.y"}}"#);
        let other: Named<Val<String>> = [("A", Val::to("x", "y")), ("B", Val::from("2"))].into_iter().collect();
        assert_eq!(named, other);
        let mut changed = other.clone();
        changed.set("A", "1");
        assert_ne!(named, changed);
        assert_eq!(changed.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["A", "B"]);
    }
}
