//! The host's CPU topology, from libvirt's capabilities XML.

use crate::model::Pcpu;

/// pCPUs with their topology from the capabilities XML (`<host><topology><cells><cell id=..>
/// <cpus><cpu id=.. socket_id=.. core_id=../>`), by id. Empty if the XML has no topology.
pub(super) fn parse_topology(xml: &str) -> Vec<Pcpu> {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return Vec::new();
    };
    let number = |n: roxmltree::Node<'_, '_>, name: &str| n.attribute(name)?.parse().ok();
    let mut pcpus: Vec<Pcpu> = doc
        .descendants()
        .filter(|n| n.has_tag_name("topology"))
        .flat_map(|t| t.descendants().filter(|n| n.has_tag_name("cell")))
        .flat_map(|cell| {
            let node_id = number(cell, "id");
            cell.descendants()
                .filter(|n| n.has_tag_name("cpu"))
                .filter_map(move |cpu| {
                    Some(Pcpu {
                        id: number(cpu, "id")?,
                        core_id: number(cpu, "core_id"),
                        socket_id: number(cpu, "socket_id"),
                        node_id,
                    })
                })
        })
        .collect();
    pcpus.sort_by_key(|p| p.id);
    pcpus.dedup_by_key(|p| p.id);
    pcpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_from_capabilities() {
        let xml = "<capabilities><host><topology><cells num='1'><cell id='0'><memory unit='KiB'>1</memory><cpus num='2'>\
            <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0-1'/>\
            <cpu id='1' socket_id='0' die_id='0' core_id='0' siblings='0-1'/>\
            </cpus></cell></cells></topology></host></capabilities>";
        let p = parse_topology(xml);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].id, 1);
        assert_eq!(p[1].core_id, Some(0));
        assert_eq!(p[1].node_id, Some(0));
        assert!(parse_topology("<capabilities/>").is_empty());
        assert!(parse_topology("not xml").is_empty());
        // The host CPU model (outside <topology>) is no pCPU.
        let model = "<capabilities><host><cpu><arch>x86_64</arch></cpu></host></capabilities>";
        assert!(parse_topology(model).is_empty());
    }
}
