//! Policy parameters: a TOML table checked against the policy's declared parameters, so that
//! an unknown key or a bad value is an error naming the key.

use std::collections::BTreeMap;
use std::fmt;

/// The type of a parameter's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A number (integers are accepted too).
    Number,
    /// `true` or `false`.
    Bool,
    /// A table of numbers keyed by VM name (per-VM settings).
    PerVm,
}

/// One documented parameter of a policy.
#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    /// Key in the `params` table.
    pub key: &'static str,
    /// Value type.
    pub kind: ParamKind,
    /// Default as TOML text; empty when the parameter is off unless set.
    pub default: &'static str,
    /// Unit of the value (`MiB`, `percent points`, `ratio`, ...).
    pub unit: &'static str,
    /// Smallest allowed value (numbers).
    pub min: f64,
    /// Largest allowed value (numbers).
    pub max: f64,
    /// What it does.
    pub doc: &'static str,
}

impl ParamSpec {
    /// A number parameter with an allowed range.
    pub const fn number(
        key: &'static str,
        default: &'static str,
        unit: &'static str,
        range: (f64, f64),
        doc: &'static str,
    ) -> Self {
        Self {
            key,
            kind: ParamKind::Number,
            default,
            unit,
            min: range.0,
            max: range.1,
            doc,
        }
    }

    /// A per-VM table of numbers, `{ vm1 = 2, vm2 = 0.5 }`, each in `range`; empty by default.
    pub const fn per_vm(
        key: &'static str,
        unit: &'static str,
        range: (f64, f64),
        doc: &'static str,
    ) -> Self {
        Self {
            kind: ParamKind::PerVm,
            ..Self::number(key, "", unit, range, doc)
        }
    }

    /// A boolean parameter.
    pub const fn boolean(key: &'static str, default: &'static str, doc: &'static str) -> Self {
        Self {
            key,
            kind: ParamKind::Bool,
            default,
            unit: "",
            min: 0.0,
            max: 0.0,
            doc,
        }
    }
}

/// A parameter that is unknown or has a bad value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    /// The key at fault.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ParamError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "parameter `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ParamError {}

/// Validated parameter values of one policy, with defaults filled in.
#[derive(Clone, Debug)]
pub struct Params {
    values: BTreeMap<&'static str, Option<toml::Value>>,
}

impl Params {
    /// Checks `table` against `specs`: every key must be declared and of the declared type and
    /// range. Missing keys take their defaults.
    pub fn parse(table: &toml::Table, specs: &'static [ParamSpec]) -> Result<Self, ParamError> {
        for (key, value) in table {
            let spec = specs.iter().find(|s| s.key == key).ok_or_else(|| {
                let known: Vec<_> = specs.iter().map(|s| s.key).collect();
                ParamError::new(
                    key.as_str(),
                    if known.is_empty() {
                        "unknown parameter (this policy takes none)".to_string()
                    } else {
                        format!("unknown parameter (known: {})", known.join(", "))
                    },
                )
            })?;
            check_value(spec, value)?;
        }
        let mut values = BTreeMap::new();
        for spec in specs {
            let value = match table.get(spec.key) {
                Some(v) => Some(v.clone()),
                None if spec.default.is_empty() => None,
                None => Some(default_value(spec)),
            };
            values.insert(spec.key, value);
        }
        Ok(Self { values })
    }

    /// A number parameter (its default when not set); `None` for an unset optional one.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.values.get(key)?.as_ref().and_then(as_number)
    }

    /// A per-VM table (empty when not set).
    pub fn per_vm(&self, key: &str) -> BTreeMap<String, f64> {
        match self.values.get(key) {
            Some(Some(toml::Value::Table(t))) => t
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), as_number(v)?)))
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// A boolean parameter (its default when not set).
    pub fn boolean(&self, key: &str) -> Option<bool> {
        match self.values.get(key)? {
            Some(toml::Value::Boolean(b)) => Some(*b),
            _ => None,
        }
    }
}

fn default_value(spec: &ParamSpec) -> toml::Value {
    let doc = format!("v = {}", spec.default);
    let table: toml::Table = doc
        .parse()
        .unwrap_or_else(|e| panic!("default of `{}` is not TOML: {e}", spec.key));
    table["v"].clone()
}

fn as_number(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

/// `number` within the spec's range, or an error about `key`.
fn check_range(spec: &ParamSpec, key: &str, number: f64) -> Result<(), ParamError> {
    if !number.is_finite() || number < spec.min || number > spec.max {
        return Err(ParamError::new(
            key,
            format!(
                "{number} is out of range [{}, {}] {}",
                spec.min, spec.max, spec.unit
            ),
        ));
    }
    Ok(())
}

fn check_value(spec: &ParamSpec, value: &toml::Value) -> Result<(), ParamError> {
    match spec.kind {
        ParamKind::PerVm => {
            let toml::Value::Table(table) = value else {
                return Err(ParamError::new(
                    spec.key,
                    format!(
                        "expected a table of VM names to numbers, found {}",
                        value.type_str()
                    ),
                ));
            };
            for (vm, v) in table {
                let key = format!("{}.{vm}", spec.key);
                let n = as_number(v).ok_or_else(|| {
                    ParamError::new(
                        key.as_str(),
                        format!("expected a number, found {}", v.type_str()),
                    )
                })?;
                check_range(spec, &key, n)?;
            }
        }
        ParamKind::Number => {
            let number = as_number(value).ok_or_else(|| {
                ParamError::new(
                    spec.key,
                    format!("expected a number, found {}", value.type_str()),
                )
            })?;
            check_range(spec, spec.key, number)?;
        }
        ParamKind::Bool => {
            if !matches!(value, toml::Value::Boolean(_)) {
                return Err(ParamError::new(
                    spec.key,
                    format!("expected true or false, found {}", value.type_str()),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPECS: &[ParamSpec] = &[
        ParamSpec::number("rate", "0.5", "ratio", (0.0, 1.0), "a rate"),
        ParamSpec::number("limit_mib", "", "MiB", (0.0, 1e6), "optional limit"),
        ParamSpec::boolean("loud", "false", "talk more"),
        ParamSpec::per_vm("shares", "weight", (0.5, 10.0), "per-VM weights"),
    ];

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn defaults_fill_in() {
        let p = Params::parse(&table(""), SPECS).unwrap();
        assert_eq!(p.number("rate"), Some(0.5));
        assert_eq!(p.number("limit_mib"), None);
        assert_eq!(p.boolean("loud"), Some(false));
    }

    #[test]
    fn integers_count_as_numbers() {
        let p = Params::parse(&table("limit_mib = 300"), SPECS).unwrap();
        assert_eq!(p.number("limit_mib"), Some(300.0));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Params::parse(&table("rat = 0.1"), SPECS).unwrap_err();
        assert_eq!(err.key, "rat");
        assert!(err.message.contains("known: rate, limit_mib, loud, shares"));
    }

    #[test]
    fn bad_type_and_range_are_named() {
        let err = Params::parse(&table("rate = \"x\""), SPECS).unwrap_err();
        assert_eq!(err.key, "rate");
        assert!(err.message.contains("expected a number, found string"));
        let err = Params::parse(&table("rate = 1.5"), SPECS).unwrap_err();
        assert!(err.message.contains("out of range"));
        let err = Params::parse(&table("loud = 1"), SPECS).unwrap_err();
        assert_eq!(err.key, "loud");
    }

    #[test]
    fn per_vm_tables_are_checked_entry_by_entry() {
        let p = Params::parse(&table("shares = { a = 2, b = 0.5 }"), SPECS).unwrap();
        let shares = p.per_vm("shares");
        assert_eq!(shares.get("a"), Some(&2.0));
        assert_eq!(shares.get("b"), Some(&0.5));
        assert!(Params::parse(&table(""), SPECS)
            .unwrap()
            .per_vm("shares")
            .is_empty());
        let err = Params::parse(&table("shares = { a = 20 }"), SPECS).unwrap_err();
        assert_eq!(err.key, "shares.a");
        assert!(err.message.contains("out of range"));
        let err = Params::parse(&table("shares = { a = \"x\" }"), SPECS).unwrap_err();
        assert_eq!(err.key, "shares.a");
        let err = Params::parse(&table("shares = 3"), SPECS).unwrap_err();
        assert_eq!(err.key, "shares");
        assert!(err.message.contains("table of VM names"));
    }
}
