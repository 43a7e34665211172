//! A YAML tree that remembers where every node came from.
//!
//! The stack format is validated against positions the user can jump to, so the file is
//! parsed into this tree (from `yaml-rust2`'s event stream) rather than straight into types.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// 1-based line and column of a node's first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos { line: m.line(), column: m.col() + 1 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// A problem found while building the tree (syntax, duplicate keys, unsupported features).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a path of mapping keys; the position of the deepest node found.
    pub fn pos_of(&self, path: &[&str]) -> Pos {
        let mut node = self;
        for segment in path {
            match node.get(segment) {
                Some(next) => node = next,
                None => break,
            }
        }
        node.pos
    }

    /// The tree as plain JSON, for typed deserialisation once it is known to be valid.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }
}

/// Parses one YAML document. Duplicate keys, anchors/aliases and non-string keys are errors:
/// a stack file has one meaning, visible on its face. Those errors come with the tree (the
/// later duplicate dropped) so that the rest of the file is still checked; a syntax error
/// has no tree.
pub fn parse(source: &str) -> Result<(Node, Vec<TreeError>), Vec<TreeError>> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    // All documents are read, so that a second one is an error rather than silently dropped.
    if let Err(e) = parser.load(&mut builder, true) {
        let pos = Pos::from(*e.marker());
        return Err(vec![TreeError { pos, message: format!("invalid YAML: {}", e.info()) }]);
    }
    let root = builder.root.unwrap_or(Node { value: Value::Null, pos: Pos { line: 1, column: 1 } });
    Ok((root, builder.errors))
}

enum Frame {
    Seq(Pos, Vec<Node>),
    /// Entries, the key waiting for its value, and whether that key is a duplicate to drop.
    Map(Pos, Vec<(Key, Node)>, Option<(Key, bool)>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    errors: Vec<TreeError>,
    documents: usize,
}

impl Builder {
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => {
                    // A key.
                    let name = match node.value {
                        Value::Str(s) => s,
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Null => "null".into(),
                        Value::Seq(_) | Value::Map(_) => {
                            self.errors.push(TreeError {
                                pos: node.pos,
                                message: "a mapping key must be a plain word, not a list or mapping".into(),
                            });
                            "?".into()
                        }
                    };
                    let first = entries.iter().find(|(k, _)| k.name == name);
                    if let Some((first, _)) = first {
                        self.errors.push(TreeError {
                            pos: node.pos,
                            message: format!(
                                "duplicate key `{name}` (first defined at line {}, column {})",
                                first.pos.line, first.pos.column
                            ),
                        });
                    }
                    *pending = Some((Key { name, pos: node.pos }, first.is_some()));
                }
                Some((key, duplicate)) => {
                    if !duplicate {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.errors.push(TreeError {
                        pos,
                        message: "a stack file holds one YAML document; found a second `---`".into(),
                    });
                }
            }
            // What follows a second document start is not part of the stack.
            _ if self.documents > 1 => {}
            Event::Alias(_) => {
                self.errors
                    .push(TreeError { pos, message: "YAML aliases (`*name`) are not supported in stack files".into() });
                self.push(Node { value: Value::Null, pos });
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let value = if style == TScalarStyle::Plain {
                    match Yaml::from_str(&text) {
                        Yaml::Null => Value::Null,
                        Yaml::Boolean(b) => Value::Bool(b),
                        Yaml::Integer(i) => Value::Int(i),
                        Yaml::Real(r) => r.parse().map(Value::Float).unwrap_or(Value::Str(text)),
                        _ => Value::Str(text),
                    }
                } else {
                    Value::Str(text)
                };
                self.check_anchor(anchor, pos);
                self.push(Node { value, pos });
            }
            Event::SequenceStart(anchor, _) => {
                self.check_anchor(anchor, pos);
                self.stack.push(Frame::Seq(pos, Vec::new()));
            }
            Event::MappingStart(anchor, _) => {
                self.check_anchor(anchor, pos);
                self.stack.push(Frame::Map(pos, Vec::new(), None));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(pos, items)) => Node { value: Value::Seq(items), pos },
                    Some(Frame::Map(pos, entries, _)) => {
                        // A block mapping's start mark comes after its first key; point at the key.
                        let pos = match entries.first() {
                            Some((k, _)) if (k.pos.line, k.pos.column) < (pos.line, pos.column) => k.pos,
                            _ => pos,
                        };
                        Node { value: Value::Map(entries), pos }
                    }
                    None => return,
                };
                self.push(node);
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

impl Builder {
    fn check_anchor(&mut self, anchor: usize, pos: Pos) {
        if anchor != 0 {
            self.errors
                .push(TreeError { pos, message: "YAML anchors (`&name`) are not supported in stack files".into() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let (root, _) = parse("a: 1\nb:\n  c: x\n").unwrap();
        assert_eq!(root.get("a").unwrap().pos, Pos { line: 1, column: 4 });
        let b = root.get("b").unwrap();
        assert_eq!(b.get("c").unwrap().pos, Pos { line: 3, column: 6 });
        assert_eq!(root.pos_of(&["b", "c"]), Pos { line: 3, column: 6 });
    }

    #[test]
    fn quoted_numbers_stay_strings() {
        let (root, _) = parse("a: \"256\"\nb: 256\n").unwrap();
        assert_eq!(root.get("a").unwrap().value, Value::Str("256".into()));
        assert_eq!(root.get("b").unwrap().value, Value::Int(256));
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let (root, errs) = parse("a: 1\na: 2\n").unwrap();
        assert_eq!(root.get("a").unwrap().value, Value::Int(1));
        assert_eq!(errs[0].pos, Pos { line: 2, column: 1 });
        assert!(errs[0].message.contains("first defined at line 1"), "{}", errs[0].message);
    }
}
