//! Operator control over single VMs: leave a VM's vCPUs or memory alone, or bound its size and
//! weight. Set by name patterns in the configuration (`[[host.vm]]`) and by an element in the
//! domain's own libvirt metadata, which travels with the VM:
//!
//! ```xml
//! <metadata>
//!   <vcoord:vm xmlns:vcoord="https://vcoord.dev/xmlns/vm/1" memory="manage"
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
    /// Each vCPU on a pCPU of its own, nothing else there.
    Dedicated,
    /// Left where it is (as `cpu = "ignore"`).
    Ignore,
}

/// What one rule or element says of a VM's vCPUs: the one fact that `cpu = "manage" |
/// "ignore"` and `placement = "pin" | "group" | "dedicated" | "ignore"` both write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSetting {
    /// vcoord places its vCPUs as the policy sees fit (`cpu = "manage"`); a placement set by an
    /// earlier rule stays.
    Manage,
    /// vcoord places it, each vCPU on one pCPU (`placement = "pin"`).
    Pin,
    /// vcoord places it on a group of pCPUs (`placement = "group"`).
    Group,
    /// vcoord gives each vCPU a pCPU of its own (`placement = "dedicated"`).
    Dedicated,
    /// vcoord leaves its vCPUs alone (`cpu = "ignore"` or `placement = "ignore"`).
    Ignore,
}

impl CpuSetting {
    /// The one setting that `cpu` and `placement`, as written side by side, say; an error when
    /// they contradict each other (`cpu = "manage"` with `placement = "ignore"`, or `cpu =
    /// "ignore"` with a placement).
    pub fn combine(
        cpu: Option<Mode>,
        placement: Option<PlacementSetting>,
    ) -> Result<Option<Self>, String> {
        use PlacementSetting as P;
        Ok(match (cpu, placement) {
            (None, None) => None,
            (Some(Mode::Manage), None) => Some(Self::Manage),
            (Some(Mode::Ignore), None | Some(P::Ignore)) | (None, Some(P::Ignore)) => {
                Some(Self::Ignore)
            }
            (None | Some(Mode::Manage), Some(P::Pin)) => Some(Self::Pin),
            (None | Some(Mode::Manage), Some(P::Group)) => Some(Self::Group),
            (None | Some(Mode::Manage), Some(P::Dedicated)) => Some(Self::Dedicated),
            (Some(Mode::Manage), Some(P::Ignore)) => {
                return Err(
                    "cpu = \"manage\" contradicts placement = \"ignore\" (one says \
                            vcoord places the vCPUs, the other that it leaves them alone)"
                        .into(),
                )
            }
            (Some(Mode::Ignore), Some(p)) => {
                let p = match p {
                    P::Pin => "pin",
                    P::Group => "group",
                    P::Dedicated => "dedicated",
                    P::Ignore => "ignore",
                };
                return Err(format!(
                    "cpu = \"ignore\" contradicts placement = \"{p}\" (one says vcoord leaves \
                     the vCPUs alone, the other how it places them)"
                ));
            }
        })
    }
}

impl PlacementSetting {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "pin" => Ok(Self::Pin),
            "group" => Ok(Self::Group),
            "dedicated" => Ok(Self::Dedicated),
            "ignore" => Ok(Self::Ignore),
            other => Err(format!("`{other}` is not pin, group, dedicated or ignore")),
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
    /// vCPU placement: managed (and how) or left alone.
    pub cpu: Option<CpuSetting>,
    /// Balloon target.
    pub memory: Option<Mode>,
    /// Never smaller than this.
    pub min_mib: Option<f64>,
    /// Never larger than this.
    pub max_mib: Option<f64>,
    /// Weight when memory is short.
    pub shares: Option<f64>,
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
        let shares = crate::limits::SHARES;
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
        match self.cpu {
            Some(CpuSetting::Manage) => control.cpu_managed = true,
            Some(CpuSetting::Pin) => {
                control.cpu_managed = true;
                control.placement = Some(Placement::Pin);
            }
            Some(CpuSetting::Group) => {
                control.cpu_managed = true;
                control.placement = Some(Placement::Group);
            }
            Some(CpuSetting::Dedicated) => {
                control.cpu_managed = true;
                control.placement = Some(Placement::Dedicated);
            }
            Some(CpuSetting::Ignore) => control.cpu_managed = false,
            None => {}
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

/// Where a VM's effective setting came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The `[[host.vm]]` rule of this index.
    Rule(usize),
    /// The domain's own metadata.
    Metadata,
}

/// A lower bound a VM ends up with above its upper bound, each set by its own rule (or the
/// metadata): every rule is sound, their combination is not.
#[derive(Clone, Debug, PartialEq)]
pub struct Contradiction {
    /// The lower bound: key, value and where it came from.
    pub low: (&'static str, f64, Source),
    /// The upper bound.
    pub high: (&'static str, f64, Source),
}

impl Contradiction {
    /// Says it for VM `vm`, naming each source with `name`.
    pub fn describe(&self, vm: &str, name: &dyn Fn(Source) -> String) -> String {
        let ((lk, lv, ls), (hk, hv, hs)) = (self.low, self.high);
        format!(
            "a VM named `{}` would get {lk} = {lv} from {} and {hk} = {hv} from {}: \
             {lk} is above {hk}",
            crate::show::shown(vm),
            name(ls),
            name(hs)
        )
    }

    /// The later of the two sources (the one to point at).
    pub fn later(&self) -> Source {
        match (self.low.2, self.high.2) {
            (Source::Rule(a), Source::Rule(b)) => Source::Rule(a.max(b)),
            _ => Source::Metadata,
        }
    }
}

/// The control of VM `name`: the defaults, then every matching rule in order, then the VM's
/// own metadata; an error when the bounds it ends up with contradict each other.
pub fn resolve(
    rules: &[VmRule],
    name: &str,
    metadata: Option<&VmSettings>,
) -> Result<VmControl, Contradiction> {
    let mut control = VmControl::default();
    // Where min_mib, max_mib, cpu_min_pct and cpu_max_pct came from.
    let mut from = [None; 4];
    let layers = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| glob_match(&r.pattern, name))
        .map(|(i, r)| (Source::Rule(i), &r.settings))
        .chain(metadata.map(|m| (Source::Metadata, m)));
    for (source, settings) in layers {
        settings.apply(&mut control);
        let set = [
            settings.min_mib,
            settings.max_mib,
            settings.cpu_min_pct,
            settings.cpu_max_pct,
        ];
        for (slot, value) in from.iter_mut().zip(set) {
            if let Some(v) = value {
                *slot = Some((v, source));
            }
        }
    }
    for (low, high, (lk, hk)) in [
        (from[0], from[1], ("min_mib", "max_mib")),
        (from[2], from[3], ("cpu_min_pct", "cpu_max_pct")),
    ] {
        if let (Some((lv, ls)), Some((hv, hs))) = (low, high) {
            if lv > hv {
                return Err(Contradiction {
                    low: (lk, lv, ls),
                    high: (hk, hv, hs),
                });
            }
        }
    }
    Ok(control)
}

/// Checks that no VM name gets contradicting bounds from the rules together: for each pair of
/// rules whose patterns can match one name, a few such names are resolved. Returns the index
/// of the later rule at fault and the message, rules named by `rule_key`.
pub fn check_rules(
    rules: &[VmRule],
    rule_key: &dyn Fn(usize) -> String,
) -> Option<(usize, String)> {
    // A character no pattern has stands for the "any" parts of a name, so that the names tried
    // match no more rules than they must.
    let filler = ['#', '~', '@', '%', 'x', '0']
        .into_iter()
        .find(|c| rules.iter().all(|r| !r.pattern.contains(*c)))
        .unwrap_or('x');
    let name = |s: Source| match s {
        Source::Rule(i) => format!("{} (match = \"{}\")", rule_key(i), rules[i].pattern),
        Source::Metadata => "the domain's metadata".into(),
    };
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[i + 1..] {
            for vm in common_names(&a.pattern, &b.pattern, filler) {
                if let Err(c) = resolve(rules, &vm, None) {
                    let Source::Rule(at) = c.later() else {
                        continue;
                    };
                    return Some((
                        at,
                        format!(
                            "the rules contradict each other: {}",
                            c.describe(&vm, &name)
                        ),
                    ));
                }
            }
        }
    }
    None
}

/// Names that both patterns match (none when they cannot match one name): the shortest, and
/// the shortest where each `*` takes at least one character of its own (one that no literal of
/// the other pattern fixes: `filler`).
pub fn common_names(p: &str, q: &str, filler: char) -> Vec<String> {
    let (p, q): (Vec<char>, Vec<char>) = (p.chars().collect(), q.chars().collect());
    let mut names: Vec<String> = [false, true]
        .into_iter()
        .filter_map(|strict| common_name(&p, &q, filler, strict))
        .collect();
    names.dedup();
    names
}

/// One way on through a pattern.
#[derive(Clone, Copy)]
enum Step {
    /// Past a `*` without a character.
    Leave,
    /// Take one character: any (`None`) or this one; `stays` on a `*`.
    Take(Option<char>, bool),
}

/// The ways on from position `i` of `pat`; a `*` not yet `owned` (when `strict`) cannot be left.
fn steps(pat: &[char], i: usize, owned: bool) -> Vec<Step> {
    match pat.get(i) {
        Some('*') if owned => vec![Step::Take(None, true), Step::Leave],
        Some('*') => vec![Step::Take(None, true)],
        Some('?') => vec![Step::Take(None, false)],
        Some(&c) => vec![Step::Take(Some(c), false)],
        None => Vec::new(),
    }
}

/// A breadth-first walk of both patterns side by side. A state is the position in each and
/// whether the `*` there has taken a character of its own yet (always so when not `strict`).
fn common_name(p: &[char], q: &[char], filler: char, strict: bool) -> Option<String> {
    use std::collections::{HashMap, VecDeque};
    type State = (usize, usize, bool, bool);
    let start: State = (0, 0, !strict, !strict);
    let mut came: HashMap<State, (State, Option<char>)> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(state @ (i, j, oi, oj)) = queue.pop_front() {
        if i == p.len() && j == q.len() {
            let mut name = Vec::new();
            let mut at = state;
            while at != start {
                let (before, c) = came[&at];
                name.extend(c);
                at = before;
            }
            return Some(name.into_iter().rev().collect());
        }
        let (sp, sq) = (steps(p, i, oi), steps(q, j, oj));
        let mut next: Vec<(State, Option<char>)> = Vec::new();
        if sp.iter().any(|s| matches!(s, Step::Leave)) {
            next.push(((i + 1, j, !strict, oj), None));
        }
        if sq.iter().any(|s| matches!(s, Step::Leave)) {
            next.push(((i, j + 1, oi, !strict), None));
        }
        for &a in &sp {
            for &b in &sq {
                let (Step::Take(a, a_stays), Step::Take(b, b_stays)) = (a, b) else {
                    continue;
                };
                let c = match (a, b) {
                    (None, None) => filler,
                    (Some(c), None) | (None, Some(c)) => c,
                    (Some(x), Some(y)) if x == y => x,
                    _ => continue,
                };
                // A star owns the character when the other side does not fix it.
                let on = |stays: bool, owned: bool, other: Option<char>, pos: usize| {
                    if stays {
                        (pos, owned || other.is_none())
                    } else {
                        (pos + 1, !strict)
                    }
                };
                let (i2, oi2) = on(a_stays, oi, b, i);
                let (j2, oj2) = on(b_stays, oj, a, j);
                next.push(((i2, j2, oi2, oj2), Some(c)));
            }
        }
        for (to, c) in next {
            if to != start && !came.contains_key(&to) {
                came.insert(to, (state, c));
                queue.push_back(to);
            }
        }
    }
    None
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
    let (mut cpu, mut placement) = (None, None);
    for attr in root.attributes() {
        let value = attr.value();
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("{}: `{value}` is not a number", attr.name()))
        };
        match attr.name() {
            "cpu" => cpu = Some(Mode::parse(value).map_err(|e| format!("cpu: {e}"))?),
            "memory" => {
                settings.memory = Some(Mode::parse(value).map_err(|e| format!("memory: {e}"))?)
            }
            "min_mib" => settings.min_mib = Some(number()?),
            "max_mib" => settings.max_mib = Some(number()?),
            "shares" => settings.shares = Some(number()?),
            "placement" => {
                placement =
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
    settings.cpu = CpuSetting::combine(cpu, placement)?;
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
                    cpu: Some(CpuSetting::Ignore),
                    min_mib: Some(1024.0),
                    ..Default::default()
                },
            },
            VmRule {
                pattern: "db-2".into(),
                settings: VmSettings {
                    cpu: Some(CpuSetting::Manage),
                    ..Default::default()
                },
            },
        ];
        let c = resolve(&rules, "db-1", None).unwrap();
        assert!(!c.cpu_managed && c.memory_managed);
        assert_eq!(c.min_kib, Some(1 << 20));
        assert!(resolve(&rules, "db-2", None).unwrap().cpu_managed);
        assert_eq!(resolve(&rules, "web", None).unwrap(), VmControl::default());
        let meta = parse_metadata(&format!(
            "<v:vm xmlns:v=\"{METADATA_NS}\" memory=\"ignore\" shares=\"2\"/>"
        ))
        .unwrap();
        let c = resolve(&rules, "db-1", Some(&meta)).unwrap();
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
                cpu: Some(CpuSetting::Manage),
                memory: Some(Mode::Ignore),
                min_mib: Some(300.0),
                max_mib: Some(400.0),
                shares: Some(3.0),
                ..VmSettings::default()
            }
        );
        let c = resolve(&[], "x", Some(&s)).unwrap();
        assert!(c.cpu_managed && !c.memory_managed);
        assert_eq!((c.min_kib, c.max_kib), (Some(300 << 10), Some(400 << 10)));
    }

    #[test]
    fn cpu_settings_in_metadata_are_understood() {
        let s = parse_metadata(
            "<vm placement=\"group\" cpu_shares=\"2048\" cpu_min_pct=\"50\" cpu_max_pct=\"150\"/>",
        )
        .unwrap();
        let c = resolve(&[], "x", Some(&s)).unwrap();
        assert_eq!(c.placement, Some(Placement::Group));
        assert_eq!(c.cpu_shares, Some(2048));
        assert_eq!((c.cpu_min_pct, c.cpu_max_pct), (Some(50.0), Some(150.0)));
        let ignore = parse_metadata("<vm placement=\"ignore\"/>").unwrap();
        assert!(!resolve(&[], "x", Some(&ignore)).unwrap().cpu_managed);
        for (xml, why) in [
            (
                "<vm placement=\"spread\"/>",
                "placement: `spread` is not pin, group, dedicated or ignore",
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

    /// A later rule wins over `placement = "ignore"` as over `cpu = "ignore"`: they are one fact.
    #[test]
    fn a_later_rule_overrides_ignore_however_written() {
        let rule = |pattern: &str, cpu, placement| VmRule {
            pattern: pattern.into(),
            settings: VmSettings {
                cpu: CpuSetting::combine(cpu, placement).unwrap(),
                ..VmSettings::default()
            },
        };
        for ignore in [
            rule("vm*", None, Some(PlacementSetting::Ignore)),
            rule("vm*", Some(Mode::Ignore), None),
        ] {
            for (later, placement) in [
                (
                    rule("vm1", None, Some(PlacementSetting::Pin)),
                    Some(Placement::Pin),
                ),
                (
                    rule("vm1", None, Some(PlacementSetting::Group)),
                    Some(Placement::Group),
                ),
                (rule("vm1", Some(Mode::Manage), None), None),
            ] {
                let rules = [ignore.clone(), later];
                let c = resolve(&rules, "vm1", None).unwrap();
                assert!(c.cpu_managed, "{rules:?}");
                assert_eq!(c.placement, placement);
                assert!(!resolve(&rules, "vm2", None).unwrap().cpu_managed);
            }
            // The domain's metadata comes last and wins too.
            let meta = parse_metadata("<vm placement=\"pin\"/>").unwrap();
            let c = resolve(std::slice::from_ref(&ignore), "vm1", Some(&meta)).unwrap();
            assert!(c.cpu_managed && c.placement == Some(Placement::Pin));
        }
    }

    #[test]
    fn cpu_and_placement_that_contradict_are_refused() {
        for xml in [
            "<vm placement=\"ignore\" cpu=\"manage\"/>",
            "<vm cpu=\"ignore\" placement=\"pin\"/>",
            "<vm cpu=\"ignore\" placement=\"group\"/>",
        ] {
            let err = parse_metadata(xml).unwrap_err();
            assert!(err.contains("contradicts"), "{xml}: {err}");
        }
        let s = parse_metadata("<vm cpu=\"manage\" placement=\"group\"/>").unwrap();
        assert_eq!(s.cpu, Some(CpuSetting::Group));
        let s = parse_metadata("<vm cpu=\"ignore\" placement=\"ignore\"/>").unwrap();
        assert_eq!(s.cpu, Some(CpuSetting::Ignore));
    }

    #[test]
    fn patterns_that_share_a_name_are_found() {
        let names = |p, q| common_names(p, q, '#');
        assert_eq!(names("vm*", "vm1"), ["vm1"]);
        assert_eq!(names("vm*", "*1"), ["vm1", "vm#1"]);
        assert_eq!(names("a?c", "*"), ["a#c"]);
        assert!(names("db-*", "web-*").is_empty());
        assert!(names("a", "b").is_empty());
        assert_eq!(names("*", "*"), ["", "#"]);
        for (p, q) in [
            ("vm*", "*1"),
            ("a*b*c", "*b?"),
            ("x?y*", "*z"),
            ("*", "abc"),
        ] {
            for n in names(p, q) {
                assert!(glob_match(p, &n) && glob_match(q, &n), "{p} {q} {n}");
            }
        }
    }

    #[test]
    fn rules_that_combine_into_a_contradiction_are_found() {
        let rule = |pattern: &str, settings: VmSettings| VmRule {
            pattern: pattern.into(),
            settings,
        };
        let key = |i: usize| format!("host[0].vm[{i}]");
        let min = |v| VmSettings {
            min_mib: Some(v),
            ..VmSettings::default()
        };
        let max = |v| VmSettings {
            max_mib: Some(v),
            ..VmSettings::default()
        };
        let rules = [rule("vm*", min(900.0)), rule("vm1", max(300.0))];
        let (at, why) = check_rules(&rules, &key).unwrap();
        assert_eq!(at, 1);
        for part in [
            "`vm1`",
            "min_mib = 900 from host[0].vm[0] (match = \"vm*\")",
            "max_mib = 300 from host[0].vm[1]",
        ] {
            assert!(why.contains(part), "{why}");
        }
        // A third rule that settles it for that name settles it.
        let settled = [rules[0].clone(), rules[1].clone(), rule("vm1", min(100.0))];
        assert_eq!(check_rules(&settled, &key), None);
        // Patterns that share no name never combine.
        assert_eq!(
            check_rules(&[rule("db*", min(900.0)), rule("web*", max(300.0))], &key),
            None
        );
        // The CPU bounds alike, through a name only the star-taking search finds.
        let cpu = [
            rule(
                "vm*",
                VmSettings {
                    cpu_min_pct: Some(80.0),
                    ..VmSettings::default()
                },
            ),
            rule(
                "*1",
                VmSettings {
                    cpu_max_pct: Some(20.0),
                    ..VmSettings::default()
                },
            ),
            rule(
                "vm1",
                VmSettings {
                    cpu_min_pct: Some(10.0),
                    ..VmSettings::default()
                },
            ),
        ];
        let (at, why) = check_rules(&cpu, &key).unwrap();
        assert_eq!(at, 1, "{why}");
        assert!(
            why.contains("cpu_min_pct = 80") && why.contains("`vm#1`"),
            "{why}"
        );
        // Metadata that contradicts a rule is an error at resolve time.
        let meta = max(100.0);
        let c = resolve(&rules[..1], "vm1", Some(&meta)).unwrap_err();
        assert_eq!(c.later(), Source::Metadata);
    }
}
