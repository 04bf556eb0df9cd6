//! Typed policy parameters. A policy declares one struct with [`params!`](macro@crate::params): each
//! field's type, default, unit, range and one line of documentation, written once. From that
//! come the `Default`, the parser (unknown keys refused, types and ranges checked, the failing
//! key named with its path) and the listing `vcoord policies` prints.
//!
//! ```
//! vcoord_api::params! {
//!     /// Parameters of an example policy.
//!     pub struct ExampleParams {
//!         /// act when pCPU loads differ by more than this
//!         pub gap_pct: f64 = 20.0, unit "percent points", range 1.0..=100.0;
//!         /// unused memory every VM keeps
//!         pub threshold_mib: vcoord_api::Mib = vcoord_api::Mib(100.0), unit "MiB", range 1.0..=1e7;
//!         /// per-VM weights
//!         pub shares: vcoord_api::PerVm<f64> = Default::default(), unit "weight", range 0.001..=1e6;
//!     }
//! }
//! use vcoord_api::Params;
//! let p = ExampleParams::from_table(&"gap_pct = 30".parse().unwrap()).unwrap();
//! assert_eq!((p.gap_pct, p.threshold_mib.get()), (30.0, 100.0));
//! let err = ExampleParams::from_table(&"shares = { web = -1 }".parse().unwrap()).unwrap_err();
//! assert_eq!(err.key, "shares.web");
//! ```

use std::collections::BTreeMap;
use std::fmt;

pub use toml::{Table, Value};

use crate::units::Mib;

/// A parameter that is unknown or has a bad value: the key (a dotted path for nested values,
/// e.g. `min_mib.web`) and what is wrong. Crosses the plugin boundary as these two strings.
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

/// One documented parameter, for listings.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Key in the `params` table.
    pub key: String,
    /// Value type, in words (`number`, `true or false`, ...).
    pub kind: String,
    /// The default, as TOML would write it, or `off` / `none` for an unset one.
    pub default: String,
    /// Unit of the value.
    pub unit: String,
    /// Smallest allowed value (numbers).
    pub min: f64,
    /// Largest allowed value (numbers).
    pub max: f64,
    /// What it does.
    pub doc: String,
}

/// A policy's parameter struct (made by [`params!`](crate::params!)).
pub trait Params: Default + Clone + fmt::Debug + Send + 'static {
    /// Every parameter, in declaration order.
    fn specs() -> Vec<ParamSpec>;

    /// Reads a `params` table: unknown keys are refused, missing ones take their defaults.
    fn from_table(table: &Table) -> Result<Self, ParamError>;
}

/// Where a value is read: its key, unit and allowed range.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    /// Key (a dotted path for nested values).
    pub key: &'a str,
    /// Unit, for messages.
    pub unit: &'a str,
    /// Smallest allowed value.
    pub min: f64,
    /// Largest allowed value.
    pub max: f64,
}

/// A type a parameter can have.
pub trait ParamValue: Sized + Clone {
    /// The type in words, for listings and messages.
    const KIND: &'static str;

    /// Reads and checks one value.
    fn parse(value: &Value, field: Field<'_>) -> Result<Self, ParamError>;

    /// The value as a listing shows it.
    fn show(&self) -> String;
}

/// A number in compact form: no 309-digit expansions of huge limits.
pub fn show_number(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-4) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn number(value: &Value, field: Field<'_>) -> Result<f64, ParamError> {
    let x = match value {
        Value::Float(f) => *f,
        Value::Integer(i) => *i as f64,
        other => {
            return Err(ParamError::new(
                field.key,
                format!("expected a number, found {}", other.type_str()),
            ))
        }
    };
    if !x.is_finite() || x < field.min || x > field.max {
        return Err(ParamError::new(
            field.key,
            format!(
                "{} is out of range [{}, {}]{}{}",
                show_number(x),
                show_number(field.min),
                show_number(field.max),
                if field.unit.is_empty() { "" } else { " " },
                field.unit
            ),
        ));
    }
    Ok(x)
}

impl ParamValue for f64 {
    const KIND: &'static str = "number";

    fn parse(value: &Value, field: Field<'_>) -> Result<Self, ParamError> {
        number(value, field)
    }

    fn show(&self) -> String {
        show_number(*self)
    }
}

impl ParamValue for u64 {
    const KIND: &'static str = "integer";

    fn parse(value: &Value, field: Field<'_>) -> Result<Self, ParamError> {
        match value {
            Value::Integer(_) => Ok(number(value, field)? as u64),
            other => Err(ParamError::new(
                field.key,
                format!("expected an integer, found {}", other.type_str()),
            )),
        }
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

impl ParamValue for bool {
    const KIND: &'static str = "true or false";

    fn parse(value: &Value, field: Field<'_>) -> Result<Self, ParamError> {
        match value {
            Value::Boolean(b) => Ok(*b),
            other => Err(ParamError::new(
                field.key,
                format!("expected true or false, found {}", other.type_str()),
            )),
        }
    }

    fn show(&self) -> String {
        self.to_string()
    }
}

impl ParamValue for Mib {
    const KIND: &'static str = "number";

    fn parse(value: &Value, field: Field<'_>) -> Result<Self, ParamError> {
        number(value, field).map(Mib)
    }

    fn show(&self) -> String {
        show_number(self.get())
    }
}

/// An optional parameter: off unless set.
impl<T: ParamValue> ParamValue for Option<T> {
    const KIND: &'static str = T::KIND;

    fn parse(value: &Value, field: Field<'_>) -> Result<Self, ParamError> {
        T::parse(value, field).map(Some)
    }

    fn show(&self) -> String {
        self.as_ref().map_or_else(|| "off".to_owned(), T::show)
    }
}

/// A per-VM table, `{ web = 2, db = 0.5 }`: each value checked like a parameter of its own
/// (its key is `param.vm`). Empty by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerVm<T>(pub BTreeMap<String, T>);

impl<T> PerVm<T> {
    /// The value set for `vm`.
    pub fn get(&self, vm: &str) -> Option<&T> {
        self.0.get(vm)
    }

    /// Sets `vm`'s value.
    pub fn insert(&mut self, vm: impl Into<String>, value: T) {
        self.0.insert(vm.into(), value);
    }

    /// Every VM with its value, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.0.iter()
    }
}

impl<T, const N: usize> From<[(String, T); N]> for PerVm<T> {
    fn from(pairs: [(String, T); N]) -> Self {
        Self(pairs.into_iter().collect())
    }
}

impl<T: ParamValue> ParamValue for PerVm<T> {
    const KIND: &'static str = "table of VM name to number";

    fn parse(value: &Value, field: Field<'_>) -> Result<Self, ParamError> {
        let Value::Table(table) = value else {
            return Err(ParamError::new(
                field.key,
                format!(
                    "expected a table of VM names to numbers, found {}",
                    value.type_str()
                ),
            ));
        };
        let mut out = BTreeMap::new();
        for (vm, v) in table {
            let key = format!("{}.{vm}", field.key);
            let parsed = T::parse(v, Field { key: &key, ..field })?;
            out.insert(vm.clone(), parsed);
        }
        Ok(Self(out))
    }

    fn show(&self) -> String {
        if self.0.is_empty() {
            "none".to_owned()
        } else {
            let items: Vec<String> = self
                .0
                .iter()
                .map(|(vm, v)| format!("{vm} = {}", v.show()))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

/// Refuses keys of `table` that are not in `known`.
pub fn refuse_unknown(table: &Table, known: &[&str]) -> Result<(), ParamError> {
    match table.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(ParamError::new(
            key.as_str(),
            if known.is_empty() {
                "unknown parameter (this policy takes none)".to_owned()
            } else {
                format!("unknown parameter (known: {})", known.join(", "))
            },
        )),
    }
}

/// Declares a policy's parameter struct; see the [module documentation](mod@crate::params).
///
/// Each field is `/// doc` then `pub name: Type = default, unit "unit", range MIN..=MAX;`.
/// Types: `f64`, `u64`, `bool`, [`Mib`](crate::Mib), `Option<_>` of those (off unless set) and
/// [`PerVm<_>`](PerVm). The range applies to numbers (and to each value of a table); give any
/// range for `bool`.
#[macro_export]
macro_rules! params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                #[doc = $doc:literal]
                $fvis:vis $field:ident : $ty:ty = $default:expr,
                    unit $unit:literal, range $min:literal ..= $max:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        $vis struct $name {
            $(
                #[doc = $doc]
                $fvis $field: $ty,
            )*
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $crate::params::Params for $name {
            fn specs() -> ::std::vec::Vec<$crate::params::ParamSpec> {
                #[allow(unused_variables)]
                let defaults = <Self as ::core::default::Default>::default();
                ::std::vec![$(
                    $crate::params::ParamSpec {
                        key: ::core::stringify!($field).to_owned(),
                        kind: <$ty as $crate::params::ParamValue>::KIND.to_owned(),
                        default: $crate::params::ParamValue::show(&defaults.$field),
                        unit: $unit.to_owned(),
                        min: $min as f64,
                        max: $max as f64,
                        doc: $doc.trim().to_owned(),
                    },
                )*]
            }

            fn from_table(
                table: &$crate::params::Table,
            ) -> ::core::result::Result<Self, $crate::params::ParamError> {
                $crate::params::refuse_unknown(table, &[$(::core::stringify!($field)),*])?;
                #[allow(unused_mut)]
                let mut params = <Self as ::core::default::Default>::default();
                $(
                    if let ::core::option::Option::Some(value) =
                        table.get(::core::stringify!($field))
                    {
                        params.$field = $crate::params::ParamValue::parse(
                            value,
                            $crate::params::Field {
                                key: ::core::stringify!($field),
                                unit: $unit,
                                min: $min as f64,
                                max: $max as f64,
                            },
                        )?;
                    }
                )*
                ::core::result::Result::Ok(params)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::params! {
        /// Test parameters.
        struct TestParams {
            /// a rate
            rate: f64 = 0.5, unit "ratio", range 0.0..=1.0;
            /// optional limit
            limit_mib: Option<Mib> = None, unit "MiB", range 0.0..=1e6;
            /// talk more
            loud: bool = false, unit "", range 0..=1;
            /// per-VM weights
            shares: PerVm<f64> = PerVm::default(), unit "weight", range 0.5..=10.0;
            /// a count
            count: u64 = 3, unit "ticks", range 1..=1000;
        }
    }

    crate::params! {
        /// No parameters at all.
        struct NoParams {}
    }

    fn parse(text: &str) -> Result<TestParams, ParamError> {
        TestParams::from_table(&text.parse().unwrap())
    }

    #[test]
    fn defaults_fill_in_and_are_listed() {
        let p = parse("").unwrap();
        assert_eq!(p, TestParams::default());
        assert_eq!(
            (p.rate, p.limit_mib, p.loud, p.count),
            (0.5, None, false, 3)
        );
        let specs = TestParams::specs();
        let shown: Vec<(&str, &str)> = specs
            .iter()
            .map(|s| (s.key.as_str(), s.default.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("rate", "0.5"),
                ("limit_mib", "off"),
                ("loud", "false"),
                ("shares", "none"),
                ("count", "3")
            ]
        );
        assert_eq!(specs[1].doc, "optional limit");
        assert!(NoParams::specs().is_empty());
    }

    #[test]
    fn values_are_typed() {
        let p = parse("limit_mib = 300\nloud = true\nrate = 1\ncount = 7").unwrap();
        assert_eq!(p.limit_mib, Some(Mib(300.0)));
        assert_eq!(p.limit_mib.unwrap().kib(), 300.0 * 1024.0);
        assert!(p.loud);
        assert_eq!((p.rate, p.count), (1.0, 7));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("rat = 0.1").unwrap_err();
        assert_eq!(err.key, "rat");
        assert!(err
            .message
            .contains("known: rate, limit_mib, loud, shares, count"));
        let err = NoParams::from_table(&"x = 1".parse().unwrap()).unwrap_err();
        assert!(err.message.contains("takes none"));
    }

    #[test]
    fn bad_types_and_ranges_are_named() {
        let err = parse("rate = \"x\"").unwrap_err();
        assert_eq!(
            (err.key.as_str(), err.message.as_str()),
            ("rate", "expected a number, found string")
        );
        let err = parse("rate = 1.5").unwrap_err();
        assert_eq!(err.message, "1.5 is out of range [0, 1] ratio");
        let err = parse("rate = nan").unwrap_err();
        assert!(err.message.starts_with("NaN is out of range"), "{err}");
        let err = parse("limit_mib = 1e300").unwrap_err();
        assert_eq!(err.message, "1e300 is out of range [0, 1e6] MiB");
        let err = parse("loud = 1").unwrap_err();
        assert_eq!(err.key, "loud");
        let err = parse("count = 2.5").unwrap_err();
        assert!(err.message.contains("expected an integer"));
    }

    #[test]
    fn per_vm_tables_are_checked_entry_by_entry() {
        let p = parse("shares = { a = 2, b = 0.5 }").unwrap();
        assert_eq!(p.shares.get("a"), Some(&2.0));
        assert_eq!(p.shares.get("b"), Some(&0.5));
        assert_eq!(p.shares.show(), "{ a = 2, b = 0.5 }");
        let err = parse("shares = { a = 20 }").unwrap_err();
        assert_eq!(err.key, "shares.a");
        assert!(err.message.contains("out of range"));
        assert_eq!(parse("shares = { a = \"x\" }").unwrap_err().key, "shares.a");
        let err = parse("shares = 3").unwrap_err();
        assert_eq!(err.key, "shares");
        assert!(err.message.contains("table of VM names"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any number is either accepted as itself or refused naming the key: never
            /// clamped, never a panic.
            #[test]
            fn numbers_are_kept_or_refused(x in proptest::num::f64::ANY) {
                let mut table = Table::new();
                table.insert("rate".into(), Value::Float(x));
                match TestParams::from_table(&table) {
                    Ok(p) => prop_assert_eq!(p.rate, x),
                    Err(e) => {
                        prop_assert_eq!(e.key.as_str(), "rate");
                        prop_assert!(!(0.0..=1.0).contains(&x));
                    }
                }
            }
        }
    }
}
