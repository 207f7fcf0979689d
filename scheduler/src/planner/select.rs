//! Scoring and selection, the second and third stages of the pipeline: given the nodes that
//! passed feasibility, choose the devices of a gang. Locality first (fewest domains, then
//! fewest nodes), then best fit (the fullest node or domain that still fits) so that large
//! holes stay open for large gangs.
//!
//! Selection is all or nothing: it returns every device of the gang or none. It never changes
//! the view; the caller takes what it chose.

use super::feasibility::check_node;
use super::view::FleetView;
use crate::ids::DeviceRef;
use crate::job::JobSpec;
use std::collections::BTreeMap;

/// A node that passed every feasibility check, with its suitable free devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Position of the node in `FleetView::nodes`.
    pub pos: usize,
    pub domain: u32,
    pub usable: usize,
}

/// Free suitable devices of one locality domain: its nodes as (usable, position), largest
/// first once sorted.
struct DomainFree {
    id: u32,
    total: usize,
    nodes: Vec<(usize, usize)>,
}

/// Where a gang may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locality {
    /// Every device on one node.
    OneNode,
    /// Any nodes, preferring fewest domains, then fewest nodes.
    Spread,
}

/// The feasibility stage over the whole fleet: nodes with at least `need_on_node` suitable
/// free devices, in node id order.
pub(crate) fn candidates(view: &FleetView, spec: &JobSpec, need_on_node: usize) -> Vec<Candidate> {
    let need_on_node = need_on_node.max(1);
    view.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.free.len() >= need_on_node)
        .filter_map(|(pos, n)| {
            // Free devices are healthy and on up nodes, so a uniform node of the right kind and
            // memory passes every check with all its free devices: no need to run them.
            let usable = match view.uniform_fit(n, spec) {
                Some(true) => n.free.len(),
                Some(false) => return None,
                None => check_node(n.node, &n.free.to_vec(), spec, need_on_node).ok()?,
            };
            Some(Candidate {
                pos,
                domain: n.domain,
                usable,
            })
        })
        .collect()
}

/// Nodes (largest first) needed to gather `need` devices from `sorted` (usable descending).
fn nodes_needed(sorted: &[(usize, usize)], need: usize) -> usize {
    let mut sum = 0;
    for (i, (usable, _)) in sorted.iter().enumerate() {
        sum += usable;
        if sum >= need {
            return i + 1;
        }
    }
    usize::MAX
}

/// Takes `need` devices from one domain's nodes (`sorted`: (usable, pos), usable descending):
/// the largest nodes whole, then the best-fitting node for the remainder.
fn take_from(sorted: &[(usize, usize)], need: usize, picks: &mut Vec<(usize, usize)>) {
    let mut used = vec![false; sorted.len()];
    let mut remaining = need;
    while remaining > 0 {
        let fit = (0..sorted.len())
            .rev()
            .find(|&i| !used[i] && sorted[i].0 >= remaining);
        let i = match fit {
            Some(i) => i,
            None => match (0..sorted.len()).find(|&i| !used[i]) {
                Some(i) => i,
                None => return,
            },
        };
        used[i] = true;
        let count = sorted[i].0.min(remaining);
        picks.push((sorted[i].1, count));
        remaining -= count;
    }
}

/// Chooses (node position, device count) pairs for a gang of `need` devices, or `None`.
pub(crate) fn select(
    cands: &[Candidate],
    need: usize,
    locality: Locality,
) -> Option<Vec<(usize, usize)>> {
    if need == 0 {
        return None;
    }
    if locality == Locality::OneNode {
        return cands
            .iter()
            .filter(|c| c.usable >= need)
            .min_by_key(|c| (c.usable, c.pos))
            .map(|c| vec![(c.pos, need)]);
    }
    let mut by_domain: BTreeMap<u32, DomainFree> = BTreeMap::new();
    for c in cands {
        let entry = by_domain.entry(c.domain).or_insert(DomainFree {
            id: c.domain,
            total: 0,
            nodes: Vec::new(),
        });
        entry.total += c.usable;
        entry.nodes.push((c.usable, c.pos));
    }
    let mut domains: Vec<DomainFree> = by_domain.into_values().collect();
    for d in &mut domains {
        d.nodes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    if domains.iter().map(|d| d.total).sum::<usize>() < need {
        return None;
    }
    // Largest domains first; ties by domain number.
    domains.sort_by(|a, b| b.total.cmp(&a.total).then(a.id.cmp(&b.id)));
    let mut picks = Vec::new();
    let mut remaining = need;
    let mut next = 0;
    while remaining > 0 && next < domains.len() {
        if domains[next].total >= remaining {
            // Some untaken domain fits the rest: the one needing fewest nodes, then the fullest.
            let best = (next..domains.len())
                .take_while(|&i| domains[i].total >= remaining)
                .min_by_key(|&i| {
                    (
                        nodes_needed(&domains[i].nodes, remaining),
                        domains[i].total,
                        domains[i].id,
                    )
                })?;
            take_from(&domains[best].nodes, remaining, &mut picks);
            return Some(picks);
        }
        take_from(&domains[next].nodes, domains[next].total, &mut picks);
        remaining -= domains[next].total;
        next += 1;
    }
    (remaining == 0).then_some(picks)
}

/// A chosen gang: its devices (in rank order) and a description of where they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub devices: Vec<DeviceRef>,
    pub where_text: String,
}

/// Describes a set of devices: "1 node in domain rack-3", "9 nodes in 2 domains (a, b)".
pub(crate) fn describe(view: &FleetView, devices: &[DeviceRef]) -> String {
    let mut nodes: Vec<usize> = devices
        .iter()
        .filter_map(|d| view.position(d.node))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut domains: Vec<&str> = nodes
        .iter()
        .map(|&p| view.nodes[p].node.domain.as_str())
        .collect();
    domains.sort_unstable();
    domains.dedup();
    let node_text = if nodes.len() == 1 {
        "1 node".to_string()
    } else {
        format!("{} nodes", nodes.len())
    };
    match domains.as_slice() {
        [one] => format!("{node_text} in domain {one}"),
        many => {
            const SHOWN_DOMAINS: usize = 4;
            let mut names = many[..many.len().min(SHOWN_DOMAINS)].join(", ");
            if many.len() > SHOWN_DOMAINS {
                names.push_str(", ...");
            }
            format!("{node_text} in {} domains ({names})", many.len())
        }
    }
}

/// Selection over candidates computed once (`candidates(view, spec, 1)`): the devices of a
/// gang of `count`, or `None` (all or nothing).
pub(crate) fn place(
    view: &FleetView,
    spec: &JobSpec,
    cands: &[Candidate],
    count: usize,
    locality: Locality,
) -> Option<Placement> {
    let picks = select(cands, count, locality)?;
    let mut devices = Vec::with_capacity(count);
    for (pos, take) in picks {
        let node = &view.nodes[pos];
        devices.extend(
            node.usable(spec)
                .take(take)
                .map(|index| DeviceRef::new(node.node.id, index)),
        );
    }
    if devices.len() != count {
        return None;
    }
    let where_text = describe(view, &devices);
    Some(Placement {
        devices,
        where_text,
    })
}
