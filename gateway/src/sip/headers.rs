//! The header fields of a [`super::message::SipMessage`]: names resolved once, values
//! kept as they were inserted.
//!
//! ezk-sip-types' own `Headers` compares names alias by alias on every insert and lookup
//! (`Name == Name` walks both names' compact forms) and prints every inserted value into a
//! fresh `String`; on the engine's hot path that was a tenth of its time. Here each field
//! carries a key computed once from its printed name (ASCII case folded: parsed names are
//! canonical, compact forms already mapped to the full name), lookups compute the wanted
//! name's key once and compare integers, and values are stored as given, so a parsed
//! value can borrow the datagram's bytes. Iteration order is ezk's: the fields of one name
//! together, at the place the name first appeared, in insertion order.

use bytesstr::BytesStr;
use ezk_sip_types::Name;

/// A header name's identity: its printed form, ASCII case folded, hashed (FNV-1a).
/// Equal keys are confirmed by comparing the printed names, so a collision is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key(u64);

impl Key {
    fn of(name: &Name) -> Key {
        Key(name
            .as_print_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |hash, b| {
                (hash ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3)
            }))
    }
}

#[derive(Debug, Clone)]
struct Field {
    key: Key,
    name: Name,
    value: BytesStr,
}

/// Header fields, grouped by name in first-appearance order (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    fields: Vec<Field>,
}

/// A name looked up: its key, computed once for the whole lookup.
struct Wanted<'a> {
    key: Key,
    name: &'a str,
}

impl<'a> Wanted<'a> {
    fn new(name: &'a Name) -> Self {
        Wanted {
            key: Key::of(name),
            name: name.as_print_str(),
        }
    }

    fn matches(&self, field: &Field) -> bool {
        field.key == self.key && field.name.as_print_str().eq_ignore_ascii_case(self.name)
    }
}

impl Headers {
    /// No fields.
    pub fn new() -> Self {
        Headers::default()
    }

    /// No fields, room for `capacity`.
    pub fn with_capacity(capacity: usize) -> Self {
        Headers {
            fields: Vec::with_capacity(capacity),
        }
    }

    /// Appends a value: after the name's other values, or at the end for a new name.
    pub fn insert(&mut self, name: Name, value: impl Into<BytesStr>) {
        let (key, last) = self.last_of(&name);
        let at = last.map_or(self.fields.len(), |last| last + 1);
        self.put(at, key, name, value.into());
    }

    /// Inserts a value at the front when the name is new; after the name's other values
    /// when it is present (as ezk's `insert_front`, which callers rely on after `remove`).
    pub fn insert_front(&mut self, name: Name, value: impl Into<BytesStr>) {
        let (key, last) = self.last_of(&name);
        let at = last.map_or(0, |last| last + 1);
        self.put(at, key, name, value.into());
    }

    /// The name's key and where its last value is, if it has one.
    fn last_of(&self, name: &Name) -> (Key, Option<usize>) {
        let wanted = Wanted::new(name);
        let last = self.fields.iter().rposition(|field| wanted.matches(field));
        (wanted.key, last)
    }

    fn put(&mut self, at: usize, key: Key, name: Name, value: BytesStr) {
        self.fields.insert(at, Field { key, name, value });
    }

    /// Removes every value of a name.
    pub fn remove(&mut self, name: &Name) {
        let wanted = Wanted::new(name);
        self.fields.retain(|field| !wanted.matches(field));
    }

    /// Whether the name has a value.
    pub fn contains(&self, name: &Name) -> bool {
        let wanted = Wanted::new(name);
        self.fields.iter().any(|field| wanted.matches(field))
    }

    /// Every value of a name, in order.
    pub fn get_raw<'a, 'n>(
        &'a self,
        name: &'n Name,
    ) -> impl Iterator<Item = &'a BytesStr> + use<'a, 'n> {
        let wanted = Wanted::new(name);
        self.fields
            .iter()
            .filter(move |field| wanted.matches(field))
            .map(|field| &field.value)
    }

    /// Every field, names grouped as the module doc says.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &BytesStr)> {
        self.fields.iter().map(|field| (&field.name, &field.value))
    }

    /// Whether `name` prints as `wanted` does (ASCII case aside): for callers walking
    /// [`Headers::iter`] themselves.
    pub fn is(name: &Name, wanted: &Name) -> bool {
        let (name, wanted) = (name.as_print_str(), wanted.as_print_str());
        name.len() == wanted.len() && name.eq_ignore_ascii_case(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_one_name_stay_together_in_insertion_order() {
        let mut headers = Headers::new();
        headers.insert(Name::VIA, "a");
        headers.insert(Name::from("X-Trace"), "1");
        headers.insert(Name::VIA, "b");
        headers.insert(Name::from("x-trace"), "2");
        headers.insert_front(Name::CALL_ID, "c");
        let printed: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_print_str(), v.as_str()))
            .collect();
        assert_eq!(
            printed,
            [
                ("Call-ID", "c"),
                ("Via", "a"),
                ("Via", "b"),
                ("X-Trace", "1"),
                ("x-trace", "2")
            ]
        );
        let traces: Vec<&str> = headers
            .get_raw(&Name::from("X-TRACE"))
            .map(|v| v.as_str())
            .collect();
        assert_eq!(traces, ["1", "2"]);
        assert!(headers.contains(&Name::from("v")), "compact forms resolve");
        headers.remove(&Name::VIA);
        assert!(!headers.contains(&Name::VIA));
        assert_eq!(headers.get_raw(&Name::VIA).count(), 0);
        assert!(Headers::is(&Name::from("call-id"), &Name::CALL_ID));
    }
}
