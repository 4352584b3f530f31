//! Placement constraints (`node.labels.zone==a`, `node.role!=manager`) and spread descriptors.
//!
//! Expressions are parsed once, where the user types them (`service create --constraint`) so bad
//! input is refused with the fix, and again by the scheduler once per batch of a service's tasks,
//! never per node. Matching follows Swarm so that stack files carry over unchanged: keys are
//! case-insensitive except the label name; values compare case-insensitively; a missing label or
//! field reads as empty, so `==` never matches it and `!=` always does. One departure: on
//! `node.platform.arch` both sides are normalized (`x86_64` is `amd64`, `aarch64` is `arm64`), so
//! a constraint written with `uname -m` spelling still matches.

use std::fmt;
use std::str::FromStr;

use shoal_proto::{Node, NodeRole};
use thiserror::Error;

/// The keys a constraint or spread descriptor may name, as listed in error messages.
pub const VALID_KEYS: &str = "node.id, node.hostname, node.role, node.platform.os, \
                              node.platform.arch, node.labels.KEY, engine.labels.KEY";

const NODE_LABELS: &str = "node.labels.";
const ENGINE_LABELS: &str = "engine.labels.";

/// Characters that would make an expression ambiguous (now or with future operators).
const RESERVED: &[char] = &['=', '!', '<', '>', '~'];

/// What a constraint or spread descriptor looks at on a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    NodeId,
    Hostname,
    Role,
    Os,
    Arch,
    /// A label of the node spec (`shoal node update --label-add`); the name is case-sensitive.
    NodeLabel(String),
    /// A label the node's engine reported about itself.
    EngineLabel(String),
}

/// Why a key was refused; wrapped by [`ConstraintError`] and [`SpreadError`] with the expression.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("missing key; valid keys are {VALID_KEYS}")]
    Missing,
    #[error("unknown key \"{key}\"{hint}; valid keys are {VALID_KEYS}")]
    Unknown { key: String, hint: String },
    #[error("missing label name after \"{prefix}\", e.g. {prefix}zone")]
    MissingLabel { prefix: &'static str },
    #[error("label name \"{label}\" may not contain spaces or any of = ! < > ~")]
    InvalidLabel { label: String },
}

impl Key {
    /// Parses a key such as `node.hostname` or `node.labels.zone`.
    pub fn parse(s: &str) -> Result<Key, KeyError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(KeyError::Missing);
        }
        for (prefix, make) in [
            (NODE_LABELS, Key::NodeLabel as fn(String) -> Key),
            (ENGINE_LABELS, Key::EngineLabel),
        ] {
            // The prefix is case-insensitive, the label name is not (as Swarm).
            let has_prefix = s
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix));
            if has_prefix {
                let label = &s[prefix.len()..];
                if label.is_empty() {
                    return Err(KeyError::MissingLabel { prefix });
                }
                if label.contains(|c: char| c.is_whitespace() || RESERVED.contains(&c)) {
                    return Err(KeyError::InvalidLabel {
                        label: label.to_string(),
                    });
                }
                return Ok(make(label.to_string()));
            }
        }
        match s.to_ascii_lowercase().as_str() {
            "node.id" => Ok(Key::NodeId),
            "node.hostname" => Ok(Key::Hostname),
            "node.role" => Ok(Key::Role),
            "node.platform.os" => Ok(Key::Os),
            "node.platform.arch" => Ok(Key::Arch),
            lower => Err(KeyError::Unknown {
                key: s.to_string(),
                hint: suggest_key(lower)
                    .map_or_else(String::new, |k| format!(" (did you mean {k}?)")),
            }),
        }
    }

    /// The node's value for this key; `None` when the node lacks it (no such label, no
    /// description yet).
    pub fn value<'n>(&self, node: &'n Node) -> Option<&'n str> {
        let desc = node.description.as_ref();
        let platform = desc.and_then(|d| d.platform.as_ref());
        match self {
            Key::NodeId => Some(&node.id),
            Key::Hostname => desc.map(|d| d.hostname.as_str()),
            Key::Role => Some(role_name(node.role())),
            Key::Os => platform.map(|p| p.os.as_str()),
            Key::Arch => platform.map(|p| p.architecture.as_str()),
            Key::NodeLabel(label) => node
                .spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .and_then(|a| a.labels.get(label))
                .map(String::as_str),
            Key::EngineLabel(label) => desc
                .and_then(|d| d.engine.as_ref())
                .and_then(|e| e.labels.get(label))
                .map(String::as_str),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::NodeId => f.write_str("node.id"),
            Key::Hostname => f.write_str("node.hostname"),
            Key::Role => f.write_str("node.role"),
            Key::Os => f.write_str("node.platform.os"),
            Key::Arch => f.write_str("node.platform.arch"),
            Key::NodeLabel(l) => write!(f, "{NODE_LABELS}{l}"),
            Key::EngineLabel(l) => write!(f, "{ENGINE_LABELS}{l}"),
        }
    }
}

/// A likely intended key for a mistyped one: a bare word is probably a node label.
fn suggest_key(lower: &str) -> Option<String> {
    if let Some(rest) = lower.strip_prefix("node.label.") {
        return Some(format!("{NODE_LABELS}{rest}"));
    }
    match lower {
        "hostname" | "id" | "role" => Some(format!("node.{lower}")),
        "os" | "arch" => Some(format!("node.platform.{lower}")),
        "node.os" | "node.arch" => Some(format!("node.platform.{}", &lower[5..])),
        _ if !lower.contains('.') && !lower.is_empty() => Some(format!("{NODE_LABELS}{lower}")),
        _ => None,
    }
}

/// How Swarm names roles in constraints.
fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}

/// `==` or `!=`, the only operators Swarm has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Eq,
    Ne,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Eq => "==",
            Operator::Ne => "!=",
        })
    }
}

/// A parsed constraint; its `Display` is the canonical spelling used in explanations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Constraint {
    pub key: Key,
    pub op: Operator,
    pub value: String,
}

/// Why a constraint expression was refused; each message quotes it and says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConstraintError {
    #[error("constraint \"{expr}\": expected an operator == or !=, e.g. {example}")]
    MissingOperator { expr: String, example: String },
    #[error("constraint \"{expr}\": {problem}")]
    Key { expr: String, problem: KeyError },
    #[error("constraint \"{expr}\": missing value after {op}, e.g. {example}")]
    MissingValue {
        expr: String,
        op: Operator,
        example: String,
    },
    #[error("constraint \"{expr}\": value \"{value}\" may not contain any of = ! < > ~")]
    InvalidValue { expr: String, value: String },
    #[error("constraint \"{expr}\": node.role is manager or worker, not \"{value}\"")]
    InvalidRole { expr: String, value: String },
}

impl Constraint {
    /// Parses `KEY==VALUE` or `KEY!=VALUE` (spaces around the parts are ignored).
    pub fn parse(expr: &str) -> Result<Constraint, ConstraintError> {
        let expr = expr.trim();
        let owned = || expr.to_string();
        // The first operator wins, so `a!=b==c` fails on its value rather than its key.
        let found = [("==", Operator::Eq), ("!=", Operator::Ne)]
            .into_iter()
            .filter_map(|(tok, op)| expr.find(tok).map(|at| (at, op)))
            .min_by_key(|&(at, _)| at);
        let Some((at, op)) = found else {
            return Err(ConstraintError::MissingOperator {
                expr: owned(),
                example: example_for(expr),
            });
        };
        let (raw_key, raw_value) = (expr[..at].trim(), expr[at + 2..].trim());
        let key = Key::parse(raw_key).map_err(|problem| ConstraintError::Key {
            expr: owned(),
            problem,
        })?;
        if raw_value.is_empty() {
            let sample = if key == Key::Role { "worker" } else { "a" };
            return Err(ConstraintError::MissingValue {
                expr: owned(),
                op,
                example: format!("{key}{op}{sample}"),
            });
        }
        if raw_value.contains(|c: char| c.is_control() || RESERVED.contains(&c)) {
            return Err(ConstraintError::InvalidValue {
                expr: owned(),
                value: raw_value.to_string(),
            });
        }
        if key == Key::Role
            && !["manager", "worker"]
                .iter()
                .any(|r| r.eq_ignore_ascii_case(raw_value))
        {
            return Err(ConstraintError::InvalidRole {
                expr: owned(),
                value: raw_value.to_string(),
            });
        }
        Ok(Constraint {
            key,
            op,
            value: raw_value.to_string(),
        })
    }

    /// Whether `node` satisfies the constraint.
    pub fn matches(&self, node: &Node) -> bool {
        let equal = match self.key.value(node) {
            // A missing value reads as "", which no (non-empty) constraint value equals.
            None => false,
            Some(v) if self.key == Key::Arch => normalize_arch(v) == normalize_arch(&self.value),
            Some(v) => eq_fold(v, &self.value),
        };
        equal == (self.op == Operator::Eq)
    }
}

impl FromStr for Constraint {
    type Err = ConstraintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Constraint::parse(s)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.op, self.value)
    }
}

/// Parses every expression of a `--constraint` list, stopping at the first bad one.
pub fn parse_constraints<S: AsRef<str>>(exprs: &[S]) -> Result<Vec<Constraint>, ConstraintError> {
    exprs
        .iter()
        .map(|e| Constraint::parse(e.as_ref()))
        .collect()
}

/// A likely intended expression for one without a valid operator: `a=b`, `a>=b` -> `a==b`.
fn example_for(expr: &str) -> String {
    const OPERATOR_LIKE: [char; 6] = ['=', '<', '>', '~', '!', ':'];
    if let Some(at) = expr.find(OPERATOR_LIKE) {
        let key = expr[..at].trim();
        let value = expr[at..]
            .trim_start_matches(|c: char| OPERATOR_LIKE.contains(&c) || c.is_whitespace());
        if Key::parse(key).is_ok() && !value.is_empty() {
            return format!("{key}=={value}");
        }
    }
    "node.labels.zone==a".to_string()
}

/// Why a `--placement-pref spread=...` descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("placement preference \"spread={descriptor}\": {problem}")]
pub struct SpreadError {
    pub descriptor: String,
    pub problem: KeyError,
}

/// Parses the descriptor of a spread preference (`node.labels.zone`); any constraint key works.
pub fn parse_spread(descriptor: &str) -> Result<Key, SpreadError> {
    Key::parse(descriptor).map_err(|problem| SpreadError {
        descriptor: descriptor.trim().to_string(),
        problem,
    })
}

/// Case-insensitive equality as Swarm's (Go's EqualFold), without allocating for ASCII.
fn eq_fold(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// Go's spelling of an architecture, so `uname -m` names and Go names compare equal.
pub fn normalize_arch(arch: &str) -> String {
    let lower = arch.trim().to_ascii_lowercase();
    match lower.as_str() {
        "x86_64" | "x86-64" | "x64" => "amd64".to_string(),
        "aarch64" | "armv8" | "armv8l" => "arm64".to_string(),
        "i386" | "i486" | "i586" | "i686" | "x86" => "386".to_string(),
        "armhf" | "armel" | "armv7l" | "armv7" | "armv6l" => "arm".to_string(),
        _ => lower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Annotations, EngineDescription, NodeDescription, NodeSpec, Platform};

    fn node() -> Node {
        Node {
            id: "n1".into(),
            role: NodeRole::Manager as i32,
            spec: Some(NodeSpec {
                annotations: Some(Annotations {
                    name: String::new(),
                    labels: [("zone".to_string(), "Eu-1".to_string())].into(),
                }),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: "Alpha".into(),
                platform: Some(Platform {
                    os: "linux".into(),
                    architecture: "x86_64".into(),
                }),
                resources: None,
                engine: Some(EngineDescription {
                    engine_version: String::new(),
                    labels: [("disk".to_string(), "ssd".to_string())].into(),
                }),
            }),
            ..Default::default()
        }
    }

    fn matches(expr: &str) -> bool {
        Constraint::parse(expr).unwrap().matches(&node())
    }

    fn err(expr: &str) -> String {
        Constraint::parse(expr).unwrap_err().to_string()
    }

    #[test]
    fn parses_valid_forms() {
        let c = Constraint::parse(" node.labels.zone == a ").unwrap();
        assert_eq!(c.key, Key::NodeLabel("zone".into()));
        assert_eq!(c.op, Operator::Eq);
        assert_eq!(c.value, "a");
        assert_eq!(c.to_string(), "node.labels.zone==a");
        let c: Constraint = "NODE.Role!=Manager".parse().unwrap();
        assert_eq!((c.key.clone(), c.op), (Key::Role, Operator::Ne));
        assert_eq!(c.to_string(), "node.role!=Manager");
        for (expr, key) in [
            ("node.id==abc", Key::NodeId),
            ("node.hostname==h", Key::Hostname),
            ("node.platform.os==linux", Key::Os),
            ("node.platform.arch!=arm64", Key::Arch),
            ("engine.labels.disk==ssd", Key::EngineLabel("disk".into())),
            ("Node.Labels.Zone==a", Key::NodeLabel("Zone".into())),
        ] {
            assert_eq!(Constraint::parse(expr).unwrap().key, key, "{expr}");
        }
        assert_eq!(
            parse_constraints(&["node.role==worker", "node.id!=x"])
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn single_equals_suggests_double() {
        assert_eq!(
            err("node.labels.zone=a"),
            "constraint \"node.labels.zone=a\": expected an operator == or !=, \
             e.g. node.labels.zone==a"
        );
        assert_eq!(
            err("node.labels.cpus>=4"),
            "constraint \"node.labels.cpus>=4\": expected an operator == or !=, \
             e.g. node.labels.cpus==4"
        );
        assert!(err("whatever").ends_with("e.g. node.labels.zone==a"));
    }

    #[test]
    fn unknown_key_lists_valid_keys() {
        assert_eq!(
            err("node.name==a"),
            "constraint \"node.name==a\": unknown key \"node.name\"; valid keys are node.id, \
             node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY, \
             engine.labels.KEY"
        );
        assert!(err("zone==a").contains("unknown key \"zone\" (did you mean node.labels.zone?)"));
        assert!(err("node.label.zone==a").contains("(did you mean node.labels.zone?)"));
        assert!(err("hostname==a").contains("(did you mean node.hostname?)"));
        assert!(err("==a").contains(": missing key; valid keys are node.id"));
    }

    #[test]
    fn label_name_and_value_errors() {
        assert_eq!(
            err("node.labels.==a"),
            "constraint \"node.labels.==a\": missing label name after \"node.labels.\", \
             e.g. node.labels.zone"
        );
        assert!(err("node.labels.my zone==a").contains("label name \"my zone\" may not contain"));
        assert_eq!(
            err("node.role=="),
            "constraint \"node.role==\": missing value after ==, e.g. node.role==worker"
        );
        assert!(
            err("node.labels.zone!=").ends_with("missing value after !=, e.g. node.labels.zone!=a")
        );
        assert_eq!(
            err("node.labels.a==b==c"),
            "constraint \"node.labels.a==b==c\": value \"b==c\" may not contain any of = ! < > ~"
        );
        assert_eq!(
            err("node.role==boss"),
            "constraint \"node.role==boss\": node.role is manager or worker, not \"boss\""
        );
    }

    #[test]
    fn matching_follows_swarm() {
        // Values compare case-insensitively; label names do not.
        assert!(matches("node.labels.zone==eu-1"));
        assert!(!matches("node.labels.Zone==eu-1"));
        assert!(matches("node.labels.Zone!=eu-1"));
        // A missing label: == never matches, != always does.
        assert!(!matches("node.labels.rack==r1"));
        assert!(matches("node.labels.rack!=r1"));
        assert!(matches("node.hostname==alpha"));
        assert!(matches("node.id==n1"));
        assert!(!matches("node.id==N2"));
        assert!(matches("node.role==manager"));
        assert!(matches("node.role!=worker"));
        assert!(matches("node.platform.os==Linux"));
        assert!(matches("engine.labels.disk==ssd"));
        assert!(!matches("engine.labels.disk!=ssd"));
        // Architectures are normalized on both sides.
        assert!(matches("node.platform.arch==amd64"));
        assert!(matches("node.platform.arch==x86_64"));
        assert!(!matches("node.platform.arch==arm64"));
    }

    #[test]
    fn missing_description_reads_as_missing() {
        let bare = Node::default();
        for (expr, want) in [
            ("node.hostname==a", false),
            ("node.hostname!=a", true),
            ("node.platform.os==linux", false),
            ("node.platform.arch!=amd64", true),
            ("engine.labels.x==y", false),
            ("node.role==worker", true),
        ] {
            assert_eq!(
                Constraint::parse(expr).unwrap().matches(&bare),
                want,
                "{expr}"
            );
        }
    }

    #[test]
    fn spread_descriptors() {
        assert_eq!(
            parse_spread("node.labels.zone").unwrap(),
            Key::NodeLabel("zone".into())
        );
        assert_eq!(parse_spread("node.platform.arch").unwrap(), Key::Arch);
        assert_eq!(
            parse_spread("node.labels.").unwrap_err().to_string(),
            "placement preference \"spread=node.labels.\": missing label name after \
             \"node.labels.\", e.g. node.labels.zone"
        );
        assert!(
            parse_spread("zone")
                .unwrap_err()
                .to_string()
                .contains("did you mean node.labels.zone?")
        );
    }
}
