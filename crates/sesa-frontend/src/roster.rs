//! The roster: which nodes are in an elastic application, and what the frontend does
//! when that changes.
//!
//! One state machine for every elastic application: the counter's and the store's
//! frontends drive it, and the simulator runs those frontends under seeded faults.
//! Events go in ([`Roster::registered`], [`Roster::exited`], [`Roster::down`],
//! [`Roster::scale_to`], and the answers to its actions); [`Roster::next_action`] hands
//! out what to do, one [`Action`] at a time. It does no I/O and reads no clock (the
//! caller passes the time), so its decisions replay with a simulation's seed.
//!
//! The policy:
//! - a node that registers is started (the application runs on it) and joins the view
//!   once started; a node id lost is never taken back (a node process is never given
//!   the id of another);
//! - a node whose process exited, that SWIM declared down, or whose part of the
//!   application failed is *lost*: the application recovers its work; one declared down
//!   is also stopped, in case it was only frozen;
//! - scaling up launches nodes; scaling down takes the newest members out of the view
//!   first, then asks them to leave (they hand their state over), then stops the ones
//!   this frontend launched; a member lost before that view is sent keeps a node
//!   being taken out as a member instead, up to the number of nodes asked for;
//! - a scale request is answered once every launched node has started and every
//!   leaving one has left, or after [`crate::JOIN_TIMEOUT`] with what was reached;
//! - with [`Roster::replacing_lost`], a lost node is replaced by a new one, to keep the
//!   number of nodes last asked for (the first nodes, or the last scale request); after
//!   [`REPLACEMENTS_FAILING`] nodes in a row lost before they started, it stops trying.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

use sesa_ebb::NodeId;
use sesa_event::Instant;
use sesa_node::Register;

/// Grace for a node declared down, or whose part failed, to stop before it is killed.
const STOP_LOST: Duration = Duration::from_secs(2);
/// Grace for a node that has left to stop before it is killed.
const STOP_LEFT: Duration = Duration::from_secs(5);

/// Replacements lost before they started, in a row, after which lost nodes are no
/// longer replaced (something keeps new nodes from starting; launching more would loop).
pub const REPLACEMENTS_FAILING: u32 = 3;

/// What the frontend does next (from [`Roster::next_action`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Node `node` is gone without leaving: recover its work (and report it).
    Lost {
        /// The node.
        node: NodeId,
        /// Why, for the report: "exited (signal 9)", "declared down", ...
        cause: String,
    },
    /// Stop node `node`'s process (through the provider); it is killed after `grace`.
    Stop {
        /// The node.
        node: NodeId,
        /// How long it has to stop by itself.
        grace: Duration,
    },
    /// Node `node` has left after [`Action::Leave`]: report it (`clean`: its leave
    /// completed; else recover what it held).
    Left {
        /// The node.
        node: NodeId,
        /// Whether it drained and answered.
        clean: bool,
    },
    /// Start the application on this newly registered node, then answer
    /// [`Roster::started`] or [`Roster::start_failed`].
    Start {
        /// Its registration.
        node: Register,
        /// Whether it came after the first nodes (to report it as joined).
        joined: bool,
    },
    /// Launch one more node, then answer [`Roster::launched`] with its id.
    Launch,
    /// The members changed: `members` is the application's new view; `leaving` are
    /// nodes just taken out of it that still hold state to hand over (asked to leave
    /// right after, by [`Action::Leave`]).
    ChangeView {
        /// The members, by id.
        members: Vec<NodeId>,
        /// The nodes taken out to leave.
        leaving: Vec<NodeId>,
    },
    /// Ask node `node` to leave, then answer [`Roster::left`].
    Leave(NodeId),
    /// Answer scale request `request`.
    Scaled {
        /// The request's number.
        request: u64,
        /// How it went.
        outcome: ScaleOutcome,
    },
}

/// How a scale request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleOutcome {
    /// Nodes asked for.
    pub target: u32,
    /// Members when it was answered.
    pub have: u32,
    /// How long it took.
    pub took: Duration,
}

impl ScaleOutcome {
    /// Whether the target was reached.
    pub fn reached(&self) -> bool {
        self.have == self.target
    }
}

impl fmt::Display for ScaleOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reached() {
            write!(f, "{} node(s) in {} ms", self.target, self.took.as_millis())
        } else {
            write!(
                f,
                "only {} of {} node(s) after {:?}",
                self.have, self.target, self.took
            )
        }
    }
}

/// Where a node is in the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Launched, not registered yet.
    Launching,
    /// Registered; the application is being started on it.
    Starting,
    /// In the view.
    Member,
    /// Taken out of the view; asked to leave.
    Leaving,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    request: u64,
    target: u32,
    since: Instant,
}

/// The roster of an elastic application (see the module's docs).
#[derive(Debug)]
pub struct Roster {
    nodes: BTreeMap<NodeId, State>,
    /// Every node id that registered (a lost one is not taken back).
    known: BTreeSet<NodeId>,
    /// Nodes this frontend launched (the others joined by hand).
    ours: BTreeSet<NodeId>,
    /// The nodes launched at the start.
    first: BTreeSet<NodeId>,
    /// Reports and stops, in the order they arose.
    urgent: VecDeque<Action>,
    starts: VecDeque<(Register, bool)>,
    to_launch: u32,
    /// Whether the members changed since the last view.
    view_changed: bool,
    /// Taken out of the view since the last view (asked to leave after it).
    leaving_now: Vec<NodeId>,
    leaves: VecDeque<NodeId>,
    pending: Option<Pending>,
    timeout: Duration,
    /// The number of nodes asked for: the first nodes, then the last scale request.
    target: u32,
    /// Whether a lost node is replaced.
    replace: bool,
    /// Nodes lost before they started, in a row.
    failed_starts: u32,
}

impl Roster {
    /// A roster of the first nodes, launched by this frontend and registered; each is
    /// handed out to start.
    pub fn new<'a>(first: impl IntoIterator<Item = &'a Register>) -> Self {
        let mut roster = Roster {
            nodes: BTreeMap::new(),
            known: BTreeSet::new(),
            ours: BTreeSet::new(),
            first: BTreeSet::new(),
            urgent: VecDeque::new(),
            starts: VecDeque::new(),
            to_launch: 0,
            view_changed: false,
            leaving_now: Vec::new(),
            leaves: VecDeque::new(),
            pending: None,
            timeout: crate::JOIN_TIMEOUT,
            target: 0,
            replace: false,
            failed_starts: 0,
        };
        for r in first {
            roster.first.insert(r.node);
            roster.ours.insert(r.node);
            roster.nodes.insert(r.node, State::Launching);
            roster.registered(r);
        }
        roster.target = roster.first.len() as u32;
        roster
    }

    /// Replaces lost nodes, to keep the number of nodes last asked for (see the
    /// module's docs).
    pub fn replacing_lost(mut self) -> Self {
        self.replace = true;
        self
    }

    /// How long a scale request may take before it is answered with what was reached
    /// (default [`crate::JOIN_TIMEOUT`]).
    pub fn with_scale_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Node `r` registered (launched by us, or joined by hand).
    pub fn registered(&mut self, r: &Register) {
        if !self.known.insert(r.node) {
            return;
        }
        let start = match self.nodes.get(&r.node) {
            Some(State::Launching) => true,
            // A node joined by hand. One of ours no longer here was lost or let go
            // before it registered: it is being stopped, and must not become a member
            // (an owner of keys about to be killed).
            None => !self.ours.contains(&r.node),
            Some(_) => false,
        };
        if start {
            self.nodes.insert(r.node, State::Starting);
            let joined = !self.first.contains(&r.node);
            self.starts.push_back((r.clone(), joined));
        }
    }

    /// The application started on `node` (after [`Action::Start`]): it joins the view.
    pub fn started(&mut self, node: NodeId) {
        if self.nodes.get(&node) == Some(&State::Starting) {
            self.nodes.insert(node, State::Member);
            self.view_changed = true;
            self.failed_starts = 0;
        }
    }

    /// The application could not start on `node`: it is lost, and stopped.
    pub fn start_failed(&mut self, node: NodeId, why: &str) {
        if self.nodes.get(&node) == Some(&State::Starting) {
            self.lose(node, format!("cannot run the application ({why})"), true);
        }
    }

    /// Node `node`'s process exited (with `status`).
    pub fn exited(&mut self, node: NodeId, status: &str) {
        match self.nodes.get(&node) {
            Some(State::Launching | State::Starting | State::Member) => {
                self.lose(node, format!("exited ({status})"), false);
            }
            // A leaving node stops by itself; [`Roster::left`] reports it.
            Some(State::Leaving) | None => {}
        }
    }

    /// SWIM declared node `node` down (and the application found it silent): it is
    /// lost, and stopped in case it was only frozen.
    pub fn down(&mut self, node: NodeId) {
        if matches!(self.nodes.get(&node), Some(State::Starting | State::Member)) {
            self.lose(node, "declared down".into(), true);
        }
    }

    /// The application's part on `node` failed (`why`): it is lost, and stopped.
    pub fn failed(&mut self, node: NodeId, why: &str) {
        if matches!(self.nodes.get(&node), Some(State::Starting | State::Member)) {
            self.lose(node, format!("lost ({why})"), true);
        }
    }

    fn lose(&mut self, node: NodeId, cause: String, stop: bool) {
        match self.nodes.remove(&node) {
            Some(State::Member) => {
                self.view_changed = true;
                // Members a scale down is taking out, in a view not sent yet, still
                // hold their state: they stay instead, up to the nodes asked for (the
                // view would otherwise hand the state over to fewer nodes than the
                // operator asked, or to none).
                while self.staying() < self.target as usize {
                    let Some(back) = self.leaving_now.pop() else {
                        break;
                    };
                    self.nodes.insert(back, State::Member);
                    self.leaves.retain(|n| *n != back);
                }
            }
            _ => self.failed_starts += 1,
        }
        if self.replace
            && self.failed_starts < REPLACEMENTS_FAILING
            && self.staying() + (self.to_launch as usize) < self.target as usize
        {
            self.to_launch += 1;
        }
        self.starts.retain(|(r, _)| r.node != node);
        self.urgent.push_back(Action::Lost { node, cause });
        if stop {
            self.urgent.push_back(Action::Stop {
                node,
                grace: STOP_LOST,
            });
        }
    }

    /// Node `id` was launched (after [`Action::Launch`]).
    pub fn launched(&mut self, id: NodeId) {
        self.ours.insert(id);
        self.nodes.entry(id).or_insert(State::Launching);
    }

    /// Node `node` answered [`Action::Leave`] (`clean`: it drained).
    pub fn left(&mut self, node: NodeId, clean: bool) {
        if self.nodes.get(&node) == Some(&State::Leaving) {
            self.nodes.remove(&node);
            self.urgent.push_back(Action::Left { node, clean });
            if self.ours.contains(&node) {
                self.urgent.push_back(Action::Stop {
                    node,
                    grace: STOP_LEFT,
                });
            }
        }
    }

    /// Scale request `request` at `now`: the application should have `target` nodes.
    /// Answered later by [`Action::Scaled`] (a newer request answers the older ones).
    pub fn scale_to(&mut self, target: u32, request: u64, now: Instant) {
        self.target = target;
        // A request from the operator: replacements may be tried again.
        self.failed_starts = 0;
        let staying = self.staying() + self.to_launch as usize;
        let target_n = target as usize;
        if target_n > staying {
            self.to_launch += (target_n - staying) as u32;
        } else if target_n < staying {
            let mut surplus = staying - target_n;
            // Unlaunched nodes first, then the newest nodes: those still on their way in
            // (holding nothing yet) before the members.
            let unlaunched = surplus.min(self.to_launch as usize);
            self.to_launch -= unlaunched as u32;
            surplus -= unlaunched;
            let mut newest: Vec<(NodeId, State)> = self
                .nodes
                .iter()
                .rev()
                .filter(|(_, s)| **s != State::Leaving)
                .map(|(n, s)| (*n, *s))
                .collect();
            newest.sort_by_key(|(_, s)| *s == State::Member);
            for (node, state) in newest.into_iter().take(surplus) {
                self.nodes.insert(node, State::Leaving);
                self.starts.retain(|(r, _)| r.node != node);
                self.leaves.push_back(node);
                if state == State::Member {
                    self.leaving_now.push(node);
                    self.view_changed = true;
                }
            }
        }
        self.pending = Some(Pending {
            request,
            target,
            since: now,
        });
    }

    /// What to do next, at `now`; `None` when nothing is to be done.
    ///
    /// Reports and stops come first, then starts and launches, then one view for every
    /// change so far, then the leaves that view made, then the scale answer.
    pub fn next_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(a) = self.urgent.pop_front() {
            return Some(a);
        }
        if let Some((node, joined)) = self.starts.pop_front() {
            return Some(Action::Start { node, joined });
        }
        if self.to_launch > 0 {
            self.to_launch -= 1;
            return Some(Action::Launch);
        }
        if self.view_changed && !self.starting() {
            self.view_changed = false;
            return Some(Action::ChangeView {
                members: self.members(),
                leaving: std::mem::take(&mut self.leaving_now),
            });
        }
        if let Some(node) = self.leaves.pop_front() {
            return Some(Action::Leave(node));
        }
        let p = self.pending?;
        let took = now - p.since;
        let have = self.count(State::Member) as u32;
        let settled = self.to_launch == 0
            && self.count(State::Launching) == 0
            && self.count(State::Starting) == 0
            && self.count(State::Leaving) == 0;
        if (settled && have == p.target) || took > self.timeout {
            self.pending = None;
            return Some(Action::Scaled {
                request: p.request,
                outcome: ScaleOutcome {
                    target: p.target,
                    have,
                    took,
                },
            });
        }
        None
    }

    fn count(&self, state: State) -> usize {
        self.nodes.values().filter(|s| **s == state).count()
    }

    fn starting(&self) -> bool {
        self.nodes.values().any(|s| *s == State::Starting)
    }

    /// Nodes that stay: members, and the ones launched or starting.
    fn staying(&self) -> usize {
        self.nodes
            .values()
            .filter(|s| **s != State::Leaving)
            .count()
    }

    /// The members (in the view), by id.
    pub fn members(&self) -> Vec<NodeId> {
        self.ids(State::Member)
    }

    fn ids(&self, state: State) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, s)| **s == state)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Nodes asked to leave that have not yet left.
    pub fn leaving(&self) -> Vec<NodeId> {
        self.ids(State::Leaving)
    }

    /// Whether nodes are being launched or started (they will join).
    pub fn joining(&self) -> bool {
        self.to_launch > 0
            || self
                .nodes
                .values()
                .any(|s| matches!(s, State::Launching | State::Starting))
    }

    /// Whether the application has no node left, nor any on its way: it cannot go on.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.to_launch == 0
    }

    /// Members that joined by hand (not launched by this frontend): at the end they are
    /// asked to leave rather than stopped.
    pub fn joined_by_hand(&self) -> Vec<NodeId> {
        self.members()
            .into_iter()
            .filter(|n| !self.ours.contains(n))
            .collect()
    }

    /// Whether this frontend launched `node`.
    pub fn is_ours(&self, node: NodeId) -> bool {
        self.ours.contains(&node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sesa_node::Platform;

    fn reg(node: u32) -> Register {
        Register {
            node: n(node),
            generation: 1,
            control: sesa_ebb::EbbId::static_id(9),
            names: sesa_ebb::EbbId::static_id(10),
            cores: 2,
            pid: 0,
            platform: Platform::Hosted,
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    /// Every action due at `now`, answering starts, launches and leaves as a frontend
    /// whose nodes all behave would (launched ids from `next_id`).
    fn settle(roster: &mut Roster, now: Instant, next_id: &mut u32) -> Vec<Action> {
        let mut done = Vec::new();
        while let Some(a) = roster.next_action(now) {
            match &a {
                Action::Start { node, .. } => roster.started(node.node),
                Action::Launch => {
                    roster.launched(n(*next_id));
                    roster.registered(&reg(*next_id));
                    *next_id += 1;
                }
                Action::Leave(node) => roster.left(*node, true),
                _ => {}
            }
            done.push(a);
        }
        done
    }

    fn n(id: u32) -> NodeId {
        NodeId::new(id)
    }

    fn ns(ids: &[u32]) -> Vec<NodeId> {
        ids.iter().map(|&id| n(id)).collect()
    }

    /// The views among `actions`: (members, leaving), as numbers.
    fn views(actions: &[Action]) -> Vec<(Vec<u32>, Vec<u32>)> {
        let numbers = |ids: &[NodeId]| ids.iter().map(|id| id.get()).collect();
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ChangeView { members, leaving } => {
                    Some((numbers(members), numbers(leaving)))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_nodes_start_then_share_one_view() {
        let first = [reg(1), reg(2), reg(3)];
        let mut roster = Roster::new(&first);
        let actions = settle(&mut roster, at(0), &mut 4);
        let starts = actions
            .iter()
            .filter(|a| matches!(a, Action::Start { joined: false, .. }))
            .count();
        assert_eq!(starts, 3);
        assert_eq!(views(&actions), vec![(vec![1, 2, 3], vec![])]);
        assert_eq!(roster.next_action(at(1)), None);
    }

    #[test]
    fn scaling_up_launches_and_answers_once_the_nodes_started() {
        let mut roster = Roster::new(&[reg(1)]);
        settle(&mut roster, at(0), &mut 2);
        roster.scale_to(3, 1, at(10));
        assert_eq!(roster.next_action(at(10)), Some(Action::Launch));
        roster.launched(n(2));
        assert_eq!(roster.next_action(at(10)), Some(Action::Launch));
        roster.launched(n(3));
        // Not answered while they have not registered.
        assert_eq!(roster.next_action(at(20)), None);
        roster.registered(&reg(2));
        roster.registered(&reg(3));
        let actions = settle(&mut roster, at(30), &mut 4);
        assert_eq!(views(&actions), vec![(vec![1, 2, 3], vec![])]);
        assert_eq!(
            actions.last(),
            Some(&Action::Scaled {
                request: 1,
                outcome: ScaleOutcome {
                    target: 3,
                    have: 3,
                    took: Duration::from_millis(20)
                }
            })
        );
    }

    /// Found by `sesa sim --workload store --faults wide --seed 4165`: a scale down
    /// from two members to one, and the member staying lost before the view went
    /// out: the view had no member, and the other left with every key.
    #[test]
    fn a_member_lost_before_a_scale_down_is_sent_keeps_a_leaving_one() {
        let mut roster = Roster::new(&[reg(1), reg(2)]);
        settle(&mut roster, at(0), &mut 4);
        roster.scale_to(1, 1, at(1));
        roster.down(n(1));
        let actions = settle(&mut roster, at(2), &mut 4);
        assert_eq!(views(&actions), vec![(vec![2], vec![])]);
        assert!(!actions.contains(&Action::Leave(n(2))), "{actions:?}");
        assert_eq!(roster.members(), ns(&[2]));
        // Once the view went out, a leave goes on (the node hands its state over to the
        // members of that view).
        let mut roster = Roster::new(&[reg(1), reg(2), reg(3)]);
        settle(&mut roster, at(0), &mut 4);
        roster.scale_to(2, 1, at(1));
        assert!(matches!(
            roster.next_action(at(1)),
            Some(Action::ChangeView { .. })
        ));
        roster.down(n(1));
        let actions = settle(&mut roster, at(2), &mut 4);
        assert!(actions.contains(&Action::Leave(n(3))), "{actions:?}");
    }

    /// Found by `sesa sim --workload store --faults wide --seed 1993`: a scale up then
    /// down let go of two nodes still launching; they registered after they had left,
    /// became members (owners of keys) and were killed, two losses at once.
    #[test]
    fn a_node_let_go_before_it_registered_never_starts() {
        let mut roster = Roster::new(&[reg(1)]);
        settle(&mut roster, at(0), &mut 4);
        roster.scale_to(2, 1, at(1));
        assert_eq!(roster.next_action(at(1)), Some(Action::Launch));
        roster.launched(n(2));
        roster.scale_to(1, 2, at(2));
        assert_eq!(roster.next_action(at(2)), Some(Action::Leave(n(2))));
        roster.left(n(2), false);
        roster.registered(&reg(2));
        let actions = settle(&mut roster, at(3), &mut 4);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Start { .. } | Action::ChangeView { .. })),
            "{actions:?}"
        );
        assert!(actions.contains(&Action::Stop {
            node: n(2),
            grace: STOP_LEFT
        }));
        assert_eq!(roster.members(), ns(&[1]));
    }

    #[test]
    fn scaling_down_sends_the_view_before_asking_the_newest_to_leave() {
        let mut roster = Roster::new(&[reg(1), reg(2), reg(3)]);
        settle(&mut roster, at(0), &mut 4);
        roster.scale_to(1, 7, at(5));
        assert_eq!(
            roster.next_action(at(5)),
            Some(Action::ChangeView {
                members: ns(&[1]),
                leaving: ns(&[3, 2])
            })
        );
        assert_eq!(roster.next_action(at(5)), Some(Action::Leave(n(3))));
        assert_eq!(roster.next_action(at(5)), Some(Action::Leave(n(2))));
        // Answered only once both have left.
        assert_eq!(roster.next_action(at(6)), None);
        roster.left(n(3), true);
        roster.left(n(2), false);
        let actions = settle(&mut roster, at(8), &mut 4);
        assert!(actions.contains(&Action::Left {
            node: n(2),
            clean: false
        }));
        assert!(actions.contains(&Action::Stop {
            node: n(3),
            grace: STOP_LEFT
        }));
        assert!(matches!(
            actions.last(),
            Some(Action::Scaled { request: 7, outcome }) if outcome.reached()
        ));
        assert!(roster.leaving().is_empty());
    }

    #[test]
    fn a_lost_member_changes_the_view_and_its_id_is_not_taken_back() {
        let mut roster = Roster::new(&[reg(1), reg(2)]);
        settle(&mut roster, at(0), &mut 3);
        roster.exited(n(2), "signal 9");
        let actions = settle(&mut roster, at(1), &mut 3);
        assert_eq!(
            actions[0],
            Action::Lost {
                node: n(2),
                cause: "exited (signal 9)".into()
            }
        );
        assert_eq!(views(&actions), vec![(vec![1], vec![])]);
        // The same id registering again (a late message of the lost life): ignored.
        roster.registered(&reg(2));
        assert_eq!(roster.next_action(at(2)), None);
        // Declared down after it exited: already handled.
        roster.down(n(2));
        assert_eq!(roster.next_action(at(2)), None);
    }

    #[test]
    fn a_node_declared_down_is_lost_and_stopped_but_a_leaving_one_is_not() {
        let mut roster = Roster::new(&[reg(1), reg(2), reg(3)]);
        settle(&mut roster, at(0), &mut 4);
        roster.scale_to(2, 1, at(0));
        assert!(matches!(
            roster.next_action(at(0)),
            Some(Action::ChangeView { .. })
        ));
        assert_eq!(roster.next_action(at(0)), Some(Action::Leave(n(3))));
        roster.down(n(3));
        roster.exited(n(3), "exit status 0");
        roster.down(n(2));
        assert_eq!(
            roster.next_action(at(1)),
            Some(Action::Lost {
                node: n(2),
                cause: "declared down".into()
            })
        );
        assert_eq!(
            roster.next_action(at(1)),
            Some(Action::Stop {
                node: n(2),
                grace: STOP_LOST
            })
        );
        assert_eq!(
            roster.next_action(at(1)),
            Some(Action::ChangeView {
                members: ns(&[1]),
                leaving: ns(&[])
            })
        );
        assert_eq!(roster.next_action(at(1)), None);
        assert!(!roster.is_empty());
    }

    #[test]
    fn a_scale_request_not_reached_is_answered_after_the_timeout() {
        let mut roster = Roster::new(&[reg(1)]).with_scale_timeout(Duration::from_secs(1));
        settle(&mut roster, at(0), &mut 2);
        roster.scale_to(2, 3, at(0));
        assert_eq!(roster.next_action(at(0)), Some(Action::Launch));
        roster.launched(n(2));
        roster.exited(n(2), "exit status 1");
        assert!(matches!(
            roster.next_action(at(1)),
            Some(Action::Lost { node, .. }) if node.get() == 2
        ));
        assert_eq!(roster.next_action(at(500)), None);
        let Some(Action::Scaled {
            request: 3,
            outcome,
        }) = roster.next_action(at(1001))
        else {
            panic!("no answer after the timeout")
        };
        assert!(!outcome.reached());
        assert_eq!(outcome.to_string(), "only 1 of 2 node(s) after 1.001s");
    }

    #[test]
    fn a_newer_request_replaces_an_older_one_and_unlaunched_nodes_go_first() {
        let mut roster = Roster::new(&[reg(1), reg(2)]);
        settle(&mut roster, at(0), &mut 3);
        roster.scale_to(4, 1, at(0));
        roster.scale_to(2, 2, at(0));
        // Nothing to launch or leave: answered at once, as request 2.
        assert!(matches!(
            roster.next_action(at(1)),
            Some(Action::Scaled { request: 2, outcome }) if outcome.reached()
        ));
    }

    #[test]
    fn replacing_lost_nodes_keeps_the_number_asked_for_until_new_ones_keep_failing() {
        let mut roster = Roster::new(&[reg(1), reg(2)]).replacing_lost();
        let mut next = 3;
        settle(&mut roster, at(0), &mut next);
        roster.exited(n(1), "killed");
        let actions = settle(&mut roster, at(1), &mut next);
        assert!(actions.contains(&Action::Launch));
        assert_eq!(roster.members(), ns(&[2, 3]));
        // A node asked to leave is not replaced.
        roster.scale_to(1, 1, at(2));
        settle(&mut roster, at(2), &mut next);
        assert_eq!(roster.members(), ns(&[2]));
        // Replacements that never start: tried REPLACEMENTS_FAILING times, then no more.
        roster.exited(n(2), "killed");
        let mut launches = 0;
        while let Some(a) = roster.next_action(at(3)) {
            if a == Action::Launch {
                launches += 1;
                roster.launched(n(next));
                roster.exited(n(next), "exit status 1");
                next += 1;
            }
        }
        assert_eq!(launches, REPLACEMENTS_FAILING);
        assert!(roster.is_empty());
    }

    #[test]
    fn scaling_down_takes_nodes_on_their_way_in_before_members() {
        let mut roster = Roster::new(&[reg(1)]);
        settle(&mut roster, at(0), &mut 2);
        roster.scale_to(3, 1, at(1));
        assert_eq!(roster.next_action(at(1)), Some(Action::Launch));
        roster.launched(n(2));
        assert_eq!(roster.next_action(at(1)), Some(Action::Launch));
        roster.launched(n(3));
        roster.registered(&reg(3));
        // Before either started: back to one node. The member stays.
        roster.scale_to(1, 2, at(2));
        let actions = settle(&mut roster, at(2), &mut 4);
        assert!(actions.contains(&Action::Leave(n(2))));
        assert!(actions.contains(&Action::Leave(n(3))));
        assert!(!actions.iter().any(|a| matches!(a, Action::Start { .. })));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::ChangeView { .. }))
        );
        assert_eq!(roster.members(), ns(&[1]));
    }

    #[test]
    fn lost_nodes_are_not_replaced_unless_asked() {
        let mut roster = Roster::new(&[reg(1), reg(2)]);
        settle(&mut roster, at(0), &mut 3);
        roster.exited(n(1), "killed");
        assert!(!settle(&mut roster, at(1), &mut 3).contains(&Action::Launch));
    }

    #[test]
    fn a_node_joined_by_hand_starts_as_joined_and_is_not_ours() {
        let mut roster = Roster::new(&[reg(1)]);
        settle(&mut roster, at(0), &mut 2);
        roster.registered(&reg(9));
        assert!(matches!(
            roster.next_action(at(0)),
            Some(Action::Start { joined: true, .. })
        ));
        roster.started(n(9));
        assert_eq!(roster.joined_by_hand(), ns(&[9]));
        assert!(!roster.is_ours(n(9)));
        assert!(roster.is_ours(n(1)));
        roster.start_failed(n(9), "too late");
        roster.failed(n(9), "gone");
        // Started already: a start failure is stale; its part failing loses it.
        assert!(matches!(
            roster.next_action(at(0)),
            Some(Action::Lost { node, .. }) if node.get() == 9
        ));
    }
}
