//! Operator control over single VMs: leave a VM's vCPUs or memory alone, or bound its size and
//! weight. Set by name patterns in the configuration (`[[host.vm]]`) and by an element in the
//! domain's own libvirt metadata, which travels with the VM:
//!
//! ```xml
//! <metadata>
//!   <vcoord:vm xmlns:vcoord="https://vcoord.dev/xmlns/vm/1" cpu="ignore" memory="manage"
//!              min_mib="1024" max_mib="4096" shares="2" placement="group"
//!              cpu_shares="2048" cpu_min_pct="50" cpu_max_pct="150"/>
//! </metadata>
//! ```
//!
//! Rules apply in file order (a later match overrides an earlier one), then the metadata.

use serde::Deserialize;

use crate::units::KIB_PER_MIB_F64;
use crate::vcoord_api::{Placement, VmControl};

/// The XML namespace of vcoord's domain metadata.
pub const METADATA_NS: &str = "https://vcoord.dev/xmlns/vm/1";

/// Whether vcoord acts on one side of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// vcoord decides (the default).
    Manage,
    /// vcoord leaves it as it is.
    Ignore,
}

/// How a VM's vCPUs are placed, as an operator writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementSetting {
    /// Each vCPU on one pCPU.
    Pin,
    /// The VM on a group of pCPUs.
    Group,
    /// Left where it is (as `cpu = "ignore"`).
    Ignore,
}

impl PlacementSetting {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "pin" => Ok(Self::Pin),
            "group" => Ok(Self::Group),
            "ignore" => Ok(Self::Ignore),
            other => Err(format!("`{other}` is not pin, group or ignore")),
        }
    }
}

impl Mode {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "manage" => Ok(Self::Manage),
            "ignore" => Ok(Self::Ignore),
            other => Err(format!("`{other}` is not manage or ignore")),
        }
    }
}

/// What one rule or one domain's metadata says; unset fields say nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VmSettings {
    /// vCPU pinning.
    pub cpu: Option<Mode>,
    /// Balloon target.
    pub memory: Option<Mode>,
    /// Never smaller than this.
    pub min_mib: Option<f64>,
    /// Never larger than this.
    pub max_mib: Option<f64>,
    /// Weight when memory is short.
    pub shares: Option<f64>,
    /// How its vCPUs are placed.
    pub placement: Option<PlacementSetting>,
    /// Its CPU weight (libvirt's `cpu_shares`).
    pub cpu_shares: Option<u64>,
    /// Never capped below this much CPU, percent of one pCPU.
    pub cpu_min_pct: Option<f64>,
    /// Never given more than this much CPU, percent of one pCPU.
    pub cpu_max_pct: Option<f64>,
}

impl VmSettings {
    /// Checks the figures: sizes finite and not negative, min not above max, shares above 0.
    /// Returns the field at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [("min_mib", self.min_mib), ("max_mib", self.max_mib)] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && (0.0..=1e9).contains(v))) {
                return Err((key, format!("{v} is out of range [0, 1e9] MiB")));
            }
        }
        if let (Some(min), Some(max)) = (self.min_mib, self.max_mib) {
            if min > max {
                return Err(("min_mib", format!("{min} is above max_mib ({max})")));
            }
        }
        if let Some(s) = self
            .shares
            .filter(|s| !(s.is_finite() && *s > 0.0 && *s <= 1e6))
        {
            return Err(("shares", format!("{s} is out of range (0, 1e6]")));
        }
        let shares = crate::runtime::guard::SHARES;
        if let Some(s) = self.cpu_shares.filter(|s| !shares.contains(s)) {
            return Err((
                "cpu_shares",
                format!("{s} is out of range [{}, {}]", shares.start(), shares.end()),
            ));
        }
        for (key, v) in [
            ("cpu_min_pct", self.cpu_min_pct),
            ("cpu_max_pct", self.cpu_max_pct),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0 && *v <= 1e5)) {
                return Err((
                    key,
                    format!("{v} is out of range (0, 1e5] percent of a pCPU"),
                ));
            }
        }
        if let (Some(min), Some(max)) = (self.cpu_min_pct, self.cpu_max_pct) {
            if min > max {
                return Err(("cpu_min_pct", format!("{min} is above cpu_max_pct ({max})")));
            }
        }
        Ok(())
    }

    /// Lays these settings over `control`.
    pub fn apply(&self, control: &mut VmControl) {
        if let Some(m) = self.cpu {
            control.cpu_managed = m == Mode::Manage;
        }
        if let Some(m) = self.memory {
            control.memory_managed = m == Mode::Manage;
        }
        let kib = |mib: f64| (mib * KIB_PER_MIB_F64).round() as u64;
        if let Some(v) = self.min_mib {
            control.min_kib = Some(kib(v));
        }
        if let Some(v) = self.max_mib {
            control.max_kib = Some(kib(v));
        }
        if let Some(v) = self.shares {
            control.shares = Some(v);
        }
        match self.placement {
            Some(PlacementSetting::Pin) => control.placement = Some(Placement::Pin),
            Some(PlacementSetting::Group) => control.placement = Some(Placement::Group),
            Some(PlacementSetting::Ignore) => control.cpu_managed = false,
            None => {}
        }
        if let Some(v) = self.cpu_shares {
            control.cpu_shares = Some(v);
        }
        if let Some(v) = self.cpu_min_pct {
            control.cpu_min_pct = Some(v);
        }
        if let Some(v) = self.cpu_max_pct {
            control.cpu_max_pct = Some(v);
        }
    }
}

/// A `[[host.vm]]` rule: settings for the VMs whose names match a pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct VmRule {
    /// A name pattern: `*` matches any run of characters, `?` one character.
    pub pattern: String,
    /// What it sets.
    pub settings: VmSettings,
}

/// The control of VM `name`: the defaults, then every matching rule in order, then the VM's
/// own metadata.
pub fn resolve(rules: &[VmRule], name: &str, metadata: Option<&VmSettings>) -> VmControl {
    let mut control = VmControl::default();
    for rule in rules.iter().filter(|r| glob_match(&r.pattern, name)) {
        rule.settings.apply(&mut control);
    }
    if let Some(m) = metadata {
        m.apply(&mut control);
    }
    control
}

/// Whether `name` matches `pattern` (`*` any run, `?` one character, the rest literally).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point for the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// Reads vcoord's metadata element (`<vm cpu=.. memory=.. min_mib=.. max_mib=.. shares=..
/// placement=.. cpu_shares=.. cpu_min_pct=.. cpu_max_pct=../>`).
///
/// `virDomainGetMetadata` asked for [`METADATA_NS`] returns the element with its namespace
/// stripped (`<vm cpu="manage"/>`), so an element in no namespace is vcoord's; one written with
/// the namespace (as in the domain XML) is too. An element in another namespace is not.
pub fn parse_metadata(xml: &str) -> Result<VmSettings, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    let ns = root.tag_name().namespace();
    if root.tag_name().name() != "vm" || ns.is_some_and(|ns| ns != METADATA_NS) {
        let found = match ns {
            Some(ns) => format!("<{}> in {ns}", root.tag_name().name()),
            None => format!("<{}>", root.tag_name().name()),
        };
        return Err(format!("expected a <vm> element, found {found}"));
    }
    let mut settings = VmSettings::default();
    for attr in root.attributes() {
        let value = attr.value();
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("{}: `{value}` is not a number", attr.name()))
        };
        match attr.name() {
            "cpu" => settings.cpu = Some(Mode::parse(value).map_err(|e| format!("cpu: {e}"))?),
            "memory" => {
                settings.memory = Some(Mode::parse(value).map_err(|e| format!("memory: {e}"))?)
            }
            "min_mib" => settings.min_mib = Some(number()?),
            "max_mib" => settings.max_mib = Some(number()?),
            "shares" => settings.shares = Some(number()?),
            "placement" => {
                settings.placement =
                    Some(PlacementSetting::parse(value).map_err(|e| format!("placement: {e}"))?)
            }
            "cpu_shares" => {
                settings.cpu_shares = Some(
                    value
                        .parse()
                        .map_err(|_| format!("cpu_shares: `{value}` is not a whole number"))?,
                )
            }
            "cpu_min_pct" => settings.cpu_min_pct = Some(number()?),
            "cpu_max_pct" => settings.cpu_max_pct = Some(number()?),
            other => return Err(format!("unknown attribute `{other}`")),
        }
    }
    settings
        .check()
        .map_err(|(key, why)| format!("{key}: {why}"))?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("db-*", "db-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*-prod-*", "web-prod-3"));
        assert!(!glob_match("db-*", "web-1"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("web", "web"));
        assert!(!glob_match("web", "web2"));
    }

    #[test]
    fn rules_apply_in_order_then_metadata() {
        let rules = vec![
            VmRule {
                pattern: "db-*".into(),
                settings: VmSettings {
                    cpu: Some(Mode::Ignore),
                    min_mib: Some(1024.0),
                    ..Default::default()
                },
            },
            VmRule {
                pattern: "db-2".into(),
                settings: VmSettings {
                    cpu: Some(Mode::Manage),
                    ..Default::default()
                },
            },
        ];
        let c = resolve(&rules, "db-1", None);
        assert!(!c.cpu_managed && c.memory_managed);
        assert_eq!(c.min_kib, Some(1 << 20));
        assert!(resolve(&rules, "db-2", None).cpu_managed);
        assert_eq!(resolve(&rules, "web", None), VmControl::default());
        let meta = parse_metadata(&format!(
            "<v:vm xmlns:v=\"{METADATA_NS}\" memory=\"ignore\" shares=\"2\"/>"
        ))
        .unwrap();
        let c = resolve(&rules, "db-1", Some(&meta));
        assert!(!c.cpu_managed && !c.memory_managed);
        assert_eq!(c.shares, Some(2.0));
    }

    /// What `virsh metadata DOM URI` (virDomainGetMetadata) really returns: no namespace.
    #[test]
    fn metadata_as_libvirt_returns_it_is_understood() {
        let s = parse_metadata(
            "<vm cpu=\"manage\" memory=\"ignore\" min_mib=\"300\" max_mib=\"400\" shares=\"3\"/>",
        )
        .unwrap();
        assert_eq!(
            s,
            VmSettings {
                cpu: Some(Mode::Manage),
                memory: Some(Mode::Ignore),
                min_mib: Some(300.0),
                max_mib: Some(400.0),
                shares: Some(3.0),
                ..VmSettings::default()
            }
        );
        let c = resolve(&[], "x", Some(&s));
        assert!(c.cpu_managed && !c.memory_managed);
        assert_eq!((c.min_kib, c.max_kib), (Some(300 << 10), Some(400 << 10)));
    }

    #[test]
    fn cpu_settings_in_metadata_are_understood() {
        let s = parse_metadata(
            "<vm placement=\"group\" cpu_shares=\"2048\" cpu_min_pct=\"50\" cpu_max_pct=\"150\"/>",
        )
        .unwrap();
        let c = resolve(&[], "x", Some(&s));
        assert_eq!(c.placement, Some(Placement::Group));
        assert_eq!(c.cpu_shares, Some(2048));
        assert_eq!((c.cpu_min_pct, c.cpu_max_pct), (Some(50.0), Some(150.0)));
        let ignore = parse_metadata("<vm placement=\"ignore\"/>").unwrap();
        assert!(!resolve(&[], "x", Some(&ignore)).cpu_managed);
        for (xml, why) in [
            (
                "<vm placement=\"spread\"/>",
                "placement: `spread` is not pin, group or ignore",
            ),
            (
                "<vm cpu_shares=\"1\"/>",
                "cpu_shares: 1 is out of range [2, 262144]",
            ),
            (
                "<vm cpu_shares=\"1.5\"/>",
                "cpu_shares: `1.5` is not a whole number",
            ),
            (
                "<vm cpu_min_pct=\"80\" cpu_max_pct=\"50\"/>",
                "cpu_min_pct: 80 is above cpu_max_pct (50)",
            ),
            ("<vm cpu_max_pct=\"0\"/>", "cpu_max_pct: 0 is out of range"),
        ] {
            let err = parse_metadata(xml).unwrap_err();
            assert!(err.contains(why), "{xml}: {err}");
        }
    }

    #[test]
    fn bad_metadata_is_refused_with_the_reason() {
        let ns = METADATA_NS;
        for (xml, why) in [
            (
                format!("<vm xmlns=\"{ns}\" cpu=\"off\"/>"),
                "cpu: `off` is not manage or ignore",
            ),
            (
                format!("<vm xmlns=\"{ns}\" colour=\"red\"/>"),
                "unknown attribute `colour`",
            ),
            (
                format!("<vm xmlns=\"{ns}\" min_mib=\"x\"/>"),
                "min_mib: `x` is not a number",
            ),
            (
                format!("<vm xmlns=\"{ns}\" min_mib=\"9\" max_mib=\"3\"/>"),
                "min_mib: 9 is above max_mib (3)",
            ),
            (
                format!("<vm xmlns=\"{ns}\" shares=\"0\"/>"),
                "shares: 0 is out of range",
            ),
            (
                "<machine cpu=\"ignore\"/>".to_owned(),
                "expected a <vm> element, found <machine>",
            ),
            (
                "<vm xmlns=\"urn:other\" cpu=\"ignore\"/>".to_owned(),
                "found <vm> in urn:other",
            ),
        ] {
            let err = parse_metadata(&xml).unwrap_err();
            assert!(err.contains(why), "{xml}: {err}");
        }
    }
}
