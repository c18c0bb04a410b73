//! The garbage collector's decisions, without I/O: the reference graph of every valid path,
//! loaded once (by the store's database), and which paths are live.
//!
//! Nix decides liveness path by path, asking its database for referrers each time (one query
//! per path: minutes on a large store). Here the whole graph is in memory and liveness is one
//! iterative walk from the roots, linear in paths plus references.
//!
//! The rules are Nix's (`LocalStore::collectGarbage`), said forwards:
//!
//! * every root that is a valid path is live;
//! * whatever a live path refers to is live;
//! * with `keep-derivations` (Nix's default, on), the deriver of a live path is live, when it
//!   is valid and lists that path among its outputs;
//! * with `keep-outputs` (default off), the valid outputs of a live derivation are live.
//!
//! Every other valid path is dead.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use pkgchain_store_model::store_path::{StorePath, StorePathError};
use thiserror::Error;

/// Every valid path with its references, recorded deriver and (for a derivation) outputs, by
/// index.
///
/// The base names live in one buffer, indexed by a hash table of indices: a store of 100,000
/// paths is read without an allocation per path (the collector reads the graph on every run).
#[derive(Debug, Clone, Default)]
pub struct ReferenceGraph {
    /// Every base name, one after the other.
    names: String,
    /// Where each path's base name ends in `names` (it starts where the previous one ends).
    ends: Vec<u32>,
    /// Indices, found by their base name. Store path hashes are already random: a fast hasher
    /// suffices.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    references: Vec<Vec<u32>>,
    deriver: Vec<Option<u32>>,
    outputs: Vec<Vec<u32>>,
}

/// Why a path could not join the graph.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddPathError {
    /// More paths, or longer names, than an index can hold.
    #[error("more valid paths than the collector can index")]
    Full,
    /// The text is no store path base name.
    #[error(transparent)]
    NotAStorePath(#[from] StorePathError),
}

impl ReferenceGraph {
    /// An empty graph.
    pub fn new() -> ReferenceGraph {
        ReferenceGraph::default()
    }

    /// Makes room for `paths` more paths, whose base names take about `name_bytes` in all,
    /// so that a reader that knows the store's size builds the graph without growing it.
    pub fn reserve(&mut self, paths: usize, name_bytes: usize) {
        self.names.reserve(name_bytes);
        self.ends.reserve(paths);
        let (names, ends, hasher) = (&self.names, &self.ends, &self.hasher);
        self.index
            .reserve(paths, |&j| hasher.hash_one(name_in(names, ends, j)));
        self.references.reserve(paths);
        self.deriver.reserve(paths);
        self.outputs.reserve(paths);
    }

    /// Adds a valid path by its base name `<hash>-<name>`, which is checked (once; adding it
    /// again returns its index).
    pub fn add_path(&mut self, base_name: &str) -> Result<u32, AddPathError> {
        StorePath::check_base_name(base_name)?;
        let hash = self.hasher.hash_one(base_name);
        if let Some(&i) = self.index.find(hash, |&i| self.name_at(i) == base_name) {
            return Ok(i);
        }
        let i = u32::try_from(self.ends.len()).map_err(|_| AddPathError::Full)?;
        let end =
            u32::try_from(self.names.len() + base_name.len()).map_err(|_| AddPathError::Full)?;
        self.names.push_str(base_name);
        self.ends.push(end);
        let (names, ends, hasher) = (&self.names, &self.ends, &self.hasher);
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(name_in(names, ends, j)));
        self.references.push(Vec::new());
        self.deriver.push(None);
        self.outputs.push(Vec::new());
        Ok(i)
    }

    /// Records that `referrer` refers to `reference` (both added before).
    pub fn add_reference(&mut self, referrer: u32, reference: u32) {
        if let Some(refs) = self.references.get_mut(referrer as usize)
            && (reference as usize) < self.ends.len()
        {
            refs.push(reference);
        }
    }

    /// Records `drv` as the deriver of `output` (both added before).
    pub fn set_deriver(&mut self, output: u32, drv: u32) {
        if let Some(d) = self.deriver.get_mut(output as usize)
            && (drv as usize) < self.ends.len()
        {
            *d = Some(drv);
        }
    }

    /// Records `output` as an output of the derivation `drv` (both added before).
    pub fn add_output(&mut self, drv: u32, output: u32) {
        if let Some(outs) = self.outputs.get_mut(drv as usize)
            && (output as usize) < self.ends.len()
        {
            outs.push(output);
        }
    }

    /// The index of a valid path.
    pub fn index_of(&self, path: &StorePath) -> Option<u32> {
        self.index_of_name(path.base_name())
    }

    /// The index of a valid path, by its base name.
    pub fn index_of_name(&self, base_name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(base_name);
        self.index
            .find(hash, |&i| self.name_at(i) == base_name)
            .copied()
    }

    /// The base name of the path at `index`.
    pub fn base_name(&self, index: u32) -> Option<&str> {
        ((index as usize) < self.ends.len()).then(|| self.name_at(index))
    }

    /// The path at `index`.
    pub fn path(&self, index: u32) -> Option<StorePath> {
        // Checked when added.
        self.base_name(index)
            .and_then(|name| StorePath::from_base_name(name).ok())
    }

    /// How many valid paths there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The base name at an index below `len()`.
    fn name_at(&self, index: u32) -> &str {
        name_in(&self.names, &self.ends, index)
    }
}

/// The name at `index` in a names buffer and its ends ("" past the end).
fn name_in<'a>(names: &'a str, ends: &[u32], index: u32) -> &'a str {
    let at = index as usize;
    let start = match at.checked_sub(1) {
        Some(before) => ends.get(before).copied().unwrap_or(0) as usize,
        None => 0,
    };
    let end = ends.get(at).copied().unwrap_or(0) as usize;
    names.get(start..end).unwrap_or("")
}

/// Nix's settings that keep more than the closure of the roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// `keep-derivations`: the derivers of live paths.
    pub derivations: bool,
    /// `keep-outputs`: the outputs of live derivations.
    pub outputs: bool,
}

impl Default for Keep {
    /// Nix's defaults: derivations kept, outputs not.
    fn default() -> Keep {
        Keep {
            derivations: true,
            outputs: false,
        }
    }
}

/// Which paths are live (by index) given `roots`; roots that are not valid paths are ignored.
pub fn live(graph: &ReferenceGraph, roots: &[StorePath], keep: Keep) -> Vec<bool> {
    live_from(graph, roots.iter().filter_map(|r| graph.index_of(r)), keep)
}

/// Which paths are live (by index) given the roots `starts` (indices).
pub fn live_from(
    graph: &ReferenceGraph,
    starts: impl IntoIterator<Item = u32>,
    keep: Keep,
) -> Vec<bool> {
    let mut live = vec![false; graph.len()];
    let mut queue: Vec<u32> = Vec::new();
    let visit = |i: u32, live: &mut Vec<bool>, queue: &mut Vec<u32>| {
        if let Some(l) = live.get_mut(i as usize)
            && !*l
        {
            *l = true;
            queue.push(i);
        }
    };
    for i in starts {
        visit(i, &mut live, &mut queue);
    }
    while let Some(i) = queue.pop() {
        for next in graph.keeps(i, keep) {
            visit(next, &mut live, &mut queue);
        }
    }
    live
}

impl ReferenceGraph {
    /// The paths that a live `i` keeps alive: its references, and per `keep` its deriver (when
    /// that lists it) or its outputs.
    fn keeps(&self, i: u32, keep: Keep) -> impl Iterator<Item = u32> + '_ {
        let at = i as usize;
        let deriver =
            self.deriver[at].filter(|&d| keep.derivations && self.outputs[d as usize].contains(&i));
        let outputs: &[u32] = if keep.outputs { &self.outputs[at] } else { &[] };
        self.references[at]
            .iter()
            .copied()
            .chain(deriver)
            .chain(outputs.iter().copied())
    }
}

/// The paths that keep any of `starts` alive, directly or not (what Nix visits from a path it
/// is asked to delete: its referrers and, per `keep`, the outputs of a derivation or the
/// derivers of an output), `starts` included.
pub fn keepers_of(
    graph: &ReferenceGraph,
    starts: impl IntoIterator<Item = u32>,
    keep: Keep,
) -> Vec<bool> {
    // The reverse of `keeps`, as one flat adjacency list.
    let n = graph.len();
    let mut counts = vec![0u32; n + 1];
    for i in 0..n as u32 {
        for k in graph.keeps(i, keep) {
            counts[k as usize + 1] += 1;
        }
    }
    for i in 0..n {
        counts[i + 1] += counts[i];
    }
    let mut fill = counts.clone();
    let mut keepers = vec![0u32; counts[n] as usize];
    for i in 0..n as u32 {
        for k in graph.keeps(i, keep) {
            let slot = &mut fill[k as usize];
            keepers[*slot as usize] = i;
            *slot += 1;
        }
    }
    let mut seen = vec![false; n];
    let mut queue: Vec<u32> = Vec::new();
    for s in starts {
        if let Some(v) = seen.get_mut(s as usize)
            && !*v
        {
            *v = true;
            queue.push(s);
        }
    }
    while let Some(i) = queue.pop() {
        let range = counts[i as usize] as usize..counts[i as usize + 1] as usize;
        for &k in &keepers[range] {
            if !seen[k as usize] {
                seen[k as usize] = true;
                queue.push(k);
            }
        }
    }
    seen
}

/// The paths marked in `doomed`, ordered so that each comes before every path it refers to
/// (a path is deleted before what it refers to, as the database's references require). Paths
/// in a reference cycle (which a store should never hold, self-references apart) come last,
/// in index order; deleting them fails on the references and keeps them.
pub fn deletion_order(graph: &ReferenceGraph, doomed: &[bool]) -> Vec<u32> {
    let is_doomed = |i: u32| doomed.get(i as usize).copied().unwrap_or(false);
    let n = graph.len();
    // Doomed referrers not yet ordered, per doomed path.
    let mut waiting = vec![0u32; n];
    for i in (0..n as u32).filter(|&i| is_doomed(i)) {
        for &r in &graph.references[i as usize] {
            if r != i && is_doomed(r) {
                waiting[r as usize] += 1;
            }
        }
    }
    let mut ready: Vec<u32> = (0..n as u32)
        .filter(|&i| is_doomed(i) && waiting[i as usize] == 0)
        .collect();
    ready.reverse();
    let mut order = Vec::new();
    let mut placed = vec![false; n];
    while let Some(i) = ready.pop() {
        placed[i as usize] = true;
        order.push(i);
        for &r in &graph.references[i as usize] {
            if r != i && is_doomed(r) {
                waiting[r as usize] -= 1;
                if waiting[r as usize] == 0 {
                    ready.push(r);
                }
            }
        }
    }
    order.extend((0..n as u32).filter(|&i| is_doomed(i) && !placed[i as usize]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store path whose hash part is `i` in decimal, zero-padded (valid nix32).
    fn p(i: usize, name: &str) -> StorePath {
        StorePath::from_base_name(&format!("{i:0>32}-{name}")).expect("store path")
    }

    /// lib <- app (refers to lib); app.drv makes app; tool.drv makes tool; junk unrelated.
    fn graph() -> ReferenceGraph {
        let mut g = ReferenceGraph::new();
        let names = [
            "lib", "app", "app.drv", "src", "tool", "tool.drv", "junk", "self",
        ];
        let ix: Vec<u32> = names
            .iter()
            .enumerate()
            .map(|(i, n)| g.add_path(p(i, n).base_name()).expect("room"))
            .collect();
        g.add_reference(ix[1], ix[0]);
        g.add_reference(ix[2], ix[3]);
        g.set_deriver(ix[1], ix[2]);
        g.add_output(ix[2], ix[1]);
        g.set_deriver(ix[4], ix[5]);
        g.add_output(ix[5], ix[4]);
        g.add_reference(ix[7], ix[7]);
        g
    }

    fn names(g: &ReferenceGraph, live: &[bool], want: bool) -> Vec<String> {
        let mut out: Vec<String> = live
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == want)
            .filter_map(|(i, _)| g.path(i as u32))
            .map(|p| p.name().to_owned())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn paths_are_found_by_name_once_each_and_bad_names_refused() {
        let mut g = ReferenceGraph::new();
        let names: Vec<String> = (0..5000)
            .map(|i| p(i, "x").base_name().to_owned())
            .collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(g.add_path(name), Ok(i as u32));
        }
        // Again: the same indices, nothing added.
        assert_eq!(g.add_path(&names[4321]), Ok(4321));
        assert_eq!(g.len(), 5000);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(g.index_of_name(name), Some(i as u32));
            assert_eq!(g.base_name(i as u32), Some(name.as_str()));
        }
        assert_eq!(g.index_of(&p(5000, "x")), None);
        assert_eq!(g.index_of_name(&names[7][..33]), None);
        assert_eq!(g.base_name(5000), None);
        assert_eq!(g.path(9), Some(p(9, "x")));
        assert!(matches!(
            g.add_path("not-a-store-path"),
            Err(AddPathError::NotAStorePath(_))
        ));
        assert_eq!(g.len(), 5000);
    }

    #[test]
    fn the_closure_of_the_roots_with_their_derivations_is_live() {
        let g = graph();
        let app = g.path(1).expect("app");
        let live = live(&g, &[app, p(99, "not-valid")], Keep::default());
        assert_eq!(names(&g, &live, true), ["app", "app.drv", "lib", "src"]);
        assert_eq!(
            names(&g, &live, false),
            ["junk", "self", "tool", "tool.drv"]
        );
    }

    #[test]
    fn keep_settings_change_what_a_root_keeps() {
        let g = graph();
        let app = g.path(1).expect("app");
        let tool_drv = g.path(5).expect("tool.drv");
        let none = Keep {
            derivations: false,
            outputs: false,
        };
        assert_eq!(names(&g, &live(&g, &[app], none), true), ["app", "lib"]);
        let outputs = Keep {
            derivations: false,
            outputs: true,
        };
        assert_eq!(
            names(
                &g,
                &live(&g, std::slice::from_ref(&tool_drv), outputs),
                true
            ),
            ["tool", "tool.drv"]
        );
        assert_eq!(names(&g, &live(&g, &[tool_drv], none), true), ["tool.drv"]);
    }

    #[test]
    fn a_deriver_that_does_not_list_the_path_is_not_kept() {
        let mut g = graph();
        // junk claims tool.drv as its deriver, which does not list it.
        g.set_deriver(6, 5);
        let junk = g.path(6).expect("junk");
        assert_eq!(
            names(&g, &live(&g, &[junk], Keep::default()), true),
            ["junk"]
        );
    }

    #[test]
    fn a_long_chain_is_walked_without_recursion() {
        let mut g = ReferenceGraph::new();
        let n = 200_000u32;
        for i in 0..n {
            g.add_path(p(i as usize, "p").base_name()).expect("room");
        }
        for i in 1..n {
            g.add_reference(i - 1, i);
        }
        let first = g.path(0).expect("first");
        assert!(live(&g, &[first], Keep::default()).iter().all(|l| *l));
    }

    #[test]
    fn keepers_are_referrers_and_derivation_links_per_the_settings() {
        let g = graph();
        let lib = g.index_of(&p(0, "lib")).expect("lib");
        // lib is kept by app, which is kept by its deriver app.drv only under keep-outputs.
        let by_default = keepers_of(&g, [lib], Keep::default());
        assert_eq!(names(&g, &by_default, true), ["app", "lib"]);
        let outputs = Keep {
            derivations: false,
            outputs: true,
        };
        assert_eq!(
            names(&g, &keepers_of(&g, [lib], outputs), true),
            ["app", "app.drv", "lib"]
        );
        // Under keep-derivations a derivation is kept by its outputs.
        let src = g.index_of(&p(3, "src")).expect("src");
        assert_eq!(
            names(&g, &keepers_of(&g, [src], Keep::default()), true),
            ["app", "app.drv", "src"]
        );
    }

    #[test]
    fn deletion_puts_referrers_before_references() {
        let mut g = graph();
        // A chain c -> b -> a plus a diamond d -> {b, a}.
        let a = g.add_path(p(20, "a").base_name()).expect("room");
        let b = g.add_path(p(21, "b").base_name()).expect("room");
        let c = g.add_path(p(22, "c").base_name()).expect("room");
        let d = g.add_path(p(23, "d").base_name()).expect("room");
        g.add_reference(b, a);
        g.add_reference(c, b);
        g.add_reference(d, b);
        g.add_reference(d, a);
        g.add_reference(a, a);
        let mut doomed = vec![false; g.len()];
        for i in [a, b, c, d, 7] {
            doomed[i as usize] = true;
        }
        let order = deletion_order(&g, &doomed);
        assert_eq!(order.len(), 5);
        let at = |x: u32| order.iter().position(|&o| o == x).expect("ordered");
        assert!(at(c) < at(b) && at(d) < at(b) && at(b) < at(a), "{order:?}");
        assert!(order.contains(&7));
    }

    #[test]
    fn a_cycle_is_ordered_last_and_nothing_is_lost() {
        let mut g = ReferenceGraph::new();
        let x = g.add_path(p(1, "x").base_name()).expect("room");
        let y = g.add_path(p(2, "y").base_name()).expect("room");
        let z = g.add_path(p(3, "z").base_name()).expect("room");
        g.add_reference(x, y);
        g.add_reference(y, x);
        g.add_reference(z, x);
        let order = deletion_order(&g, &[true, true, true]);
        assert_eq!(order, [z, x, y]);
    }
}
