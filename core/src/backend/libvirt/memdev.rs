//! Each domain's virtio-mem devices, its balloon's free page reporting and its CPU tuning
//! (`<cputune>`: weight, vCPU quota and period, emulator affinity), from the live domain XML; and a device's new request, sent back as the same XML element with `<requested>`
//! changed (libvirt finds the device to update by the whole element, not by its alias).
//!
//! A domain is read when first seen and every [`REFRESH`]. What a guest has plugged since
//! (`<current>`) comes from libvirt's memory-device size-change event (libvirt >= 7.9, an event
//! loop running); where there is none, a domain with a virtio-mem device is read every tick.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use roxmltree::{Document, Node};
use tracing::error;
use vcoord_api::{CpuTune, VirtioMemView};

use super::LibvirtBackend;
use crate::model::VmSample;

/// How often a domain without virtio-mem devices is read again (one may be hot-plugged).
pub const REFRESH: Duration = Duration::from_secs(10);

/// What one domain's XML said of its memory devices.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Devices {
    pub virtio_mem: Vec<VirtioMemView>,
    pub free_page_reporting: bool,
    pub cputune: CpuTune,
}

/// The domain's `<cputune>`: what libvirt set (`None` where an element is absent: the default).
fn parse_cputune(doc: &Document) -> Result<CpuTune, String> {
    let mut tune = CpuTune::default();
    let Some(node) = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("cputune"))
    else {
        return Ok(tune);
    };
    let text = |name: &str| {
        node.children()
            .find(|n| n.has_tag_name(name))
            .map(|n| n.text().unwrap_or("").trim().to_owned())
    };
    let bad = |name: &str, value: &str| format!("<cputune><{name}> `{value}` is not a number");
    if let Some(v) = text("shares") {
        tune.cpu_shares = Some(v.parse().map_err(|_| bad("shares", &v))?);
    }
    if let Some(v) = text("quota") {
        tune.vcpu_quota_us = Some(v.parse().map_err(|_| bad("quota", &v))?);
    }
    if let Some(v) = text("period") {
        tune.vcpu_period_us = Some(v.parse().map_err(|_| bad("period", &v))?);
    }
    if let Some(list) = node
        .children()
        .find(|n| n.has_tag_name("emulatorpin"))
        .and_then(|n| n.attribute("cpuset"))
    {
        tune.emulator = Some(
            super::procfs::parse_cpu_list(list.trim())
                .ok_or_else(|| format!("<cputune><emulatorpin cpuset='{list}'> is no CPU list"))?,
        );
    }
    Ok(tune)
}

/// Devices read per domain (by UUID), when, and the unusable ones already reported.
#[derive(Debug, Default)]
pub(super) struct DeviceCache {
    read: HashMap<String, (Instant, Devices)>,
    reported: HashMap<String, String>,
}

/// A size element (`<size unit='MiB'>1024</size>`) in KiB.
fn kib(node: Option<Node>) -> Result<Option<u64>, String> {
    let Some(node) = node else { return Ok(None) };
    let what = node.tag_name().name();
    let value: u64 = node
        .text()
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|_| format!("<{what}> is not a whole number"))?;
    let unit = node.attribute("unit").unwrap_or("KiB");
    let bytes_per: u64 = match unit {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        other => return Err(format!("<{what}> has an unknown unit `{other}`")),
    };
    Ok(Some(value.saturating_mul(bytes_per) / 1024))
}

/// The devices a domain's XML describes. A virtio-mem device that vcoord cannot drive safely
/// (no size or block, a size off its block, no guest NUMA node) is kept, held, with why.
pub(super) fn parse_devices(xml: &str) -> Result<(Devices, Vec<String>), String> {
    let doc = Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
    let mut out = Devices {
        cputune: parse_cputune(&doc)?,
        ..Devices::default()
    };
    let devices = doc
        .descendants()
        .find(|n| n.has_tag_name("devices"))
        .into_iter()
        .flat_map(|d| d.children());
    let mut unusable = Vec::new();
    for dev in devices.filter(|n| n.is_element()) {
        if dev.has_tag_name("memballoon") {
            out.free_page_reporting = dev.attribute("freePageReporting") == Some("on");
            continue;
        }
        if !dev.has_tag_name("memory") || dev.attribute("model") != Some("virtio-mem") {
            continue;
        }
        let alias = dev
            .children()
            .find(|n| n.has_tag_name("alias"))
            .and_then(|n| n.attribute("name"))
            .unwrap_or("")
            .to_owned();
        let target = dev.children().find(|n| n.has_tag_name("target"));
        let child = |name: &str| target.and_then(|t| t.children().find(|n| n.has_tag_name(name)));
        let size = kib(child("size"))?.unwrap_or(0);
        let block = kib(child("block"))?.unwrap_or(0);
        let requested = kib(child("requested"))?.unwrap_or(0);
        let current = kib(child("current"))?.unwrap_or(requested);
        let node = child("node").and_then(|n| n.text()?.trim().parse().ok());
        let why = if size == 0 || block == 0 {
            Some("has no size or no block size".to_string())
        } else if size % block != 0 {
            Some(format!(
                "size {size} KiB is not a multiple of its block of {block} KiB"
            ))
        } else if node.is_none() {
            Some("names no guest NUMA node (the domain needs a NUMA cell)".to_string())
        } else if alias.is_empty() {
            Some("has no alias (is the domain running?)".to_string())
        } else {
            None
        };
        if let Some(why) = &why {
            unusable.push(format!(
                "virtio-mem device {}: {why}; left as it is",
                if alias.is_empty() { "?" } else { &alias }
            ));
        }
        out.virtio_mem.push(VirtioMemView {
            alias,
            size_kib: size,
            block_kib: block,
            requested_kib: requested,
            current_kib: current,
            node,
            held: why.is_some(),
        });
    }
    Ok((out, unusable))
}

/// The live XML element of the device `alias` with its request set to `requested_kib`.
pub(super) fn with_request(xml: &str, alias: &str, requested_kib: u64) -> Result<String, String> {
    let doc = Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
    let dev = doc
        .descendants()
        .find(|n| {
            n.has_tag_name("memory")
                && n.attribute("model") == Some("virtio-mem")
                && n.children()
                    .any(|a| a.has_tag_name("alias") && a.attribute("name") == Some(alias))
        })
        .ok_or_else(|| format!("no virtio-mem device {alias}"))?;
    let requested = dev
        .descendants()
        .find(|n| n.has_tag_name("requested"))
        .ok_or_else(|| format!("virtio-mem device {alias} has no <requested>"))?;
    let (start, end) = (dev.range(), requested.range());
    Ok(format!(
        "{}<requested unit='KiB'>{requested_kib}</requested>{}",
        &xml[start.start..end.start],
        &xml[end.end..start.end]
    ))
}

impl DeviceCache {
    /// Forgets every domain read, so each is read again (a new connection: events may have
    /// been missed).
    pub(super) fn forget_all(&mut self) {
        self.read.clear();
    }

    /// A request vcoord made and libvirt took.
    pub(super) fn requested(&mut self, uuid: &str, alias: &str, requested_kib: u64) {
        if let Some(dev) = self.device(uuid, alias) {
            dev.requested_kib = requested_kib;
        }
    }

    /// A CPU tune vcoord set and libvirt took.
    pub(super) fn tuned(&mut self, uuid: &str, change: &CpuTune) {
        if let Some((_, devices)) = self.read.get_mut(uuid) {
            devices.cputune = devices.cputune.with(change);
        }
    }

    /// A size change libvirt reported; whether it was of a device known here.
    fn plugged(&mut self, change: &super::ffi::SizeChange) -> bool {
        self.device(&change.uuid, &change.alias)
            .map(|dev| dev.current_kib = change.size_kib)
            .is_some()
    }

    fn device(&mut self, uuid: &str, alias: &str) -> Option<&mut VirtioMemView> {
        let (_, devices) = self.read.get_mut(uuid)?;
        devices.virtio_mem.iter_mut().find(|d| d.alias == alias)
    }
}

impl LibvirtBackend {
    /// Fills in each VM's memory devices: the size changes libvirt reported since the last
    /// tick, and the XML of domains new or due (every tick for those with virtio-mem where no
    /// events come).
    pub(super) fn attach_devices(&mut self, vms: &mut [VmSample]) {
        let changes =
            std::mem::take(&mut *self.size_changes.lock().unwrap_or_else(|e| e.into_inner()));
        for change in &changes {
            if self.devices.plugged(change) {
                self.calls.events += 1;
            }
        }
        let events = self.follows_size_events();
        let uuids: Vec<&str> = vms.iter().map(|v| v.uuid.as_str()).collect();
        self.devices
            .read
            .retain(|uuid, _| uuids.contains(&uuid.as_str()));
        self.devices
            .reported
            .retain(|uuid, _| uuids.contains(&uuid.as_str()));
        for vm in vms.iter_mut() {
            let due = self.devices.read.get(&vm.uuid).is_none_or(|(at, d)| {
                (!events && !d.virtio_mem.is_empty()) || at.elapsed() >= REFRESH
            });
            if due {
                match self.domain_xml(&vm.name).map(|xml| parse_devices(&xml)) {
                    Some(Ok((devices, unusable))) => {
                        let said = unusable.join("; ");
                        if !said.is_empty() && self.devices.reported.get(&vm.uuid) != Some(&said) {
                            error!(vm = %crate::show::shown(&vm.name), error = %said, "cannot drive this domain's virtio-mem device");
                        }
                        self.devices.reported.insert(vm.uuid.clone(), said);
                        self.devices
                            .read
                            .insert(vm.uuid.clone(), (Instant::now(), devices));
                    }
                    Some(Err(e)) => {
                        error!(vm = %crate::show::shown(&vm.name), error = %e, "cannot read the domain's devices")
                    }
                    None => {}
                }
            }
            if let Some((_, d)) = self.devices.read.get(&vm.uuid) {
                vm.memory.virtio_mem = d.virtio_mem.clone();
                vm.memory.free_page_reporting = d.free_page_reporting;
                vm.cputune = d.cputune.clone();
            }
        }
    }

    /// The live XML of a domain; `None` when it cannot be read this time.
    fn domain_xml(&mut self, name: &str) -> Option<String> {
        self.calls.sample_calls += 2;
        let conn = self.live().ok()?;
        let dom = conn.lookup_domain_by_name(name).ok()?;
        dom.xml_desc(0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "<domain type='qemu'><name>a</name><devices>\
        <memballoon model='virtio' freePageReporting='on'><stats period='2'/></memballoon>\
        <memory model='virtio-mem'>\n  <target>\n    <size unit='KiB'>1048576</size>\n    <node>0</node>\n    \
        <block unit='KiB'>2048</block>\n    <requested unit='KiB'>262144</requested>\n    <current unit='KiB'>131072</current>\n  \
        </target>\n  <alias name='virtiomem0'/>\n  <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>\n</memory>\
        </devices></domain>";

    #[test]
    fn cputune_is_read_as_libvirt_set_it() {
        let xml = "<domain type='qemu'><name>a</name><cputune><shares>2048</shares>\
            <period>100000</period><quota>50000</quota><emulatorpin cpuset='0-1,3'/>\
            <vcpupin vcpu='0' cpuset='1'/></cputune><devices/></domain>";
        let (d, _) = parse_devices(xml).unwrap();
        assert_eq!(d.cputune.cpu_shares, Some(2048));
        assert_eq!(d.cputune.vcpu_quota_us, Some(50_000));
        assert_eq!(d.cputune.vcpu_period_us, Some(100_000));
        assert_eq!(d.cputune.emulator.unwrap().as_slice(), &[0, 1, 3]);
        let (d, _) = parse_devices("<domain><devices/></domain>").unwrap();
        assert!(d.cputune.is_empty());
        let bad = "<domain><cputune><quota>lots</quota></cputune></domain>";
        assert!(parse_devices(bad).unwrap_err().contains("<quota> `lots`"));
    }

    #[test]
    fn devices_are_read_with_their_units() {
        let (d, unusable) = parse_devices(LIVE).unwrap();
        assert!(unusable.is_empty(), "{unusable:?}");
        assert!(d.free_page_reporting);
        assert_eq!(
            d.virtio_mem,
            vec![VirtioMemView {
                alias: "virtiomem0".into(),
                size_kib: 1 << 20,
                block_kib: 2048,
                requested_kib: 256 << 10,
                current_kib: 128 << 10,
                node: Some(0),
                held: false,
            }]
        );
        let mib = LIVE.replace("<size unit='KiB'>1048576", "<size unit='GiB'>1");
        assert_eq!(
            parse_devices(&mib).unwrap().0.virtio_mem[0].size_kib,
            1 << 20
        );
        let bad = LIVE.replace("unit='KiB'>2048", "unit='parsecs'>2048");
        assert!(parse_devices(&bad)
            .unwrap_err()
            .contains("unknown unit `parsecs`"));
    }

    #[test]
    fn an_unusable_device_is_held_with_a_reason() {
        let off_block = LIVE.replace("1048576", "1048577");
        let (d, unusable) = parse_devices(&off_block).unwrap();
        assert!(d.virtio_mem[0].held);
        assert!(
            unusable[0].contains("size 1048577 KiB is not a multiple of its block of 2048 KiB"),
            "{unusable:?}"
        );
        let no_node = LIVE.replace("<node>0</node>", "");
        let (d, unusable) = parse_devices(&no_node).unwrap();
        assert!(d.virtio_mem[0].held);
        assert!(unusable[0].contains("NUMA"), "{unusable:?}");
    }

    #[test]
    fn a_request_is_the_live_element_with_requested_changed() {
        let xml = with_request(LIVE, "virtiomem0", 65536).unwrap();
        assert!(xml.starts_with("<memory model='virtio-mem'>"), "{xml}");
        assert!(xml.ends_with("</memory>"), "{xml}");
        assert!(
            xml.contains("<requested unit='KiB'>65536</requested>"),
            "{xml}"
        );
        assert!(xml.contains("<address type='pci'"), "{xml}");
        assert!(!xml.contains("262144"), "{xml}");
        assert!(with_request(LIVE, "virtiomem9", 0).is_err());
    }
}
