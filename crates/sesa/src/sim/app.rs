//! Any application on the simulator, run by the production frontend.
//!
//! Node 0 runs `sesa_frontend::drive`: the same frontend as `sesa run` (registry,
//! offload, SWIM membership, the admin service, the application's frontend side and
//! its roster), with a [`NodeProvider`] that starts simulated nodes instead of
//! processes. Each node runs `sesa_node::run::run`, the node's life of a hosted or
//! native node, with the application table it is given. Scale requests reach the
//! frontend as `sesa scale` sends them: a client node calls the admin service.
//!
//! The fault schedule crashes nodes (kill -9), cuts a node off from the frontend or
//! another node (healed later), resets connections, and asks for a new number of nodes.
//! The quiet phase heals everything and asks for the starting number of nodes again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use sesa_ebb::{CoreId, EbbId};
use sesa_exec::{Client, MembershipConfig};
use sesa_frontend::cluster::{Admin, AdminReply, AdminService};
use sesa_frontend::{Application, Event, FrontendConfig, NodeProvider, Recorded};
use sesa_node::app::Apps;
use sesa_node::run::{Addressing, NodeParams};
use sesa_node::{ADMIN_FIRST, ADMIN_INDEX, Platform};
use sesa_sim::NodeEnd;

use super::*;

/// The frontend's node id.
const FRONTEND: u32 = 0;
/// Simulated machines of the `sesa scale` clients: ids from here (their messenger
/// identities are admin ones, `ADMIN_FIRST + n`).
const SCALERS: u32 = 200;

/// What the provider was asked, for the harness to carry out between turns (a node
/// cannot be started from inside another node's event).
#[derive(Default)]
struct Requests {
    start: RefCell<Vec<sesa_frontend::NodeSpec>>,
    launched: RefCell<Vec<NodeId>>,
    stop: RefCell<Vec<NodeId>>,
    exited: RefCell<VecDeque<(NodeId, String)>>,
    /// The cluster secret (from the first launch), for the `sesa scale` clients.
    secret: RefCell<Option<Secret>>,
    join: Cell<Option<SocketAddr>>,
}

/// The frontend's node provider: simulated nodes.
struct Provider(Rc<Requests>);

impl NodeProvider for Provider {
    fn launch(&mut self, spec: &sesa_frontend::NodeSpec) -> anyhow::Result<u32> {
        self.0.secret.replace(Some(spec.secret.clone()));
        self.0.join.set(Some(spec.join));
        self.0.start.borrow_mut().push(spec.clone());
        self.0.launched.borrow_mut().push(spec.id);
        // A simulated node has no process: its id stands for the process id.
        Ok(spec.id.get())
    }

    fn exited(&mut self) -> Option<(NodeId, String)> {
        self.0.exited.borrow_mut().pop_front()
    }

    fn stop_node(&mut self, id: NodeId, _grace: Duration) {
        self.0.stop.borrow_mut().push(id);
    }

    fn stop_all(&mut self, grace: Duration) {
        let ids = self.0.launched.borrow().clone();
        for id in ids {
            self.stop_node(id, grace);
        }
    }
}

/// A `sesa scale` request's target, and its answer (or why there was none).
pub(super) type Scaled = (u32, Result<String, String>);

/// A run of application `A`: the frontend's result when it finished, what it reported,
/// and the answers to scale requests.
pub(super) struct AppRun<A: Application> {
    /// The frontend's result, once it has returned.
    pub result: Rc<RefCell<Option<anyhow::Result<A::Output>>>>,
    /// The frontend's events.
    pub events: Arc<Recorded>,
    /// `sesa scale` answers: (target, outcome).
    pub scaled: Rc<RefCell<Vec<Scaled>>>,
    requests: Rc<Requests>,
    /// How many of the frontend's events were handed to [`Watch::events`].
    events_seen: usize,
    /// Each node id's running life.
    lives: BTreeMap<u32, NodeKey>,
    /// How many of `sim.ended()` were seen.
    ended_seen: usize,
    scalers: u32,
    apps: fn() -> Apps,
    cores: usize,
    /// `SESA_SIM_DEBUG`: the frontend's events are printed as they come, with the time.
    debug: bool,
}

impl<A: Application> AppRun<A> {
    /// Starts the frontend of `nodes` nodes of `cores` cores running `apps`.
    pub fn start(
        sim: &Sim,
        nodes: u32,
        cores: usize,
        apps: fn() -> Apps,
        settings: A::Settings,
    ) -> Self {
        let requests = Rc::new(Requests::default());
        let events = Arc::new(Recorded::default());
        let result = Rc::new(RefCell::new(None));
        {
            let (requests, events, result) = (requests.clone(), events.clone(), result.clone());
            sim.start_node(spec(FRONTEND, 1), move || async move {
                let config = FrontendConfig {
                    cores_per_node: Some(cores),
                    listen: SocketAddr::new(ip_of(FRONTEND).into(), PORT),
                    publish: false,
                    ..FrontendConfig::local(nodes, Vec::new(), events)
                };
                let outcome = match sesa_frontend::offload::Grants::new(&[]) {
                    Ok(grants) => {
                        let mut provider = Provider(requests);
                        sesa_frontend::drive::<A>(&mut provider, &config, grants, settings).await
                    }
                    Err(e) => Err(e),
                };
                *result.borrow_mut() = Some(outcome);
            });
        }
        AppRun {
            result,
            events,
            scaled: Rc::default(),
            requests,
            events_seen: 0,
            lives: BTreeMap::new(),
            ended_seen: 0,
            scalers: 0,
            apps,
            cores,
            debug: std::env::var_os("SESA_SIM_DEBUG").is_some(),
        }
    }

    /// Runs the simulation for `d`, then carries out what the frontend asked of its
    /// provider, tells it which nodes ended, and hands `watch` the frontend's new events.
    pub fn step(&mut self, sim: &Sim, d: Duration, watch: &mut dyn Watch) {
        sim.run_for(d);
        self.serve(sim);
        let events = self.new_events();
        if self.debug {
            for e in &events {
                eprintln!("{:?} frontend: {e}", sim.now());
            }
        }
        watch.events(&events);
    }

    /// Carries out what the frontend asked of its provider, and tells it which nodes
    /// ended. Call between turns.
    fn serve(&mut self, sim: &Sim) {
        for s in std::mem::take(&mut *self.requests.start.borrow_mut()) {
            // The simulated machine's id is the node's.
            let (id, apps) = (s.id.get(), self.apps);
            let machine = spec(id, s.cores.unwrap_or(self.cores));
            let key = sim.start_node(machine, move || node(s, apps()));
            self.lives.insert(id, key);
        }
        for id in std::mem::take(&mut *self.requests.stop.borrow_mut()) {
            // A node process asked to stop exits; the simulated one ends at once.
            if let Some(key) = self.lives.get(&id.get()) {
                sim.crash(*key);
            }
        }
        let ended = sim.ended();
        for (id, end) in &ended[self.ended_seen..] {
            // The frontend's nodes (not the frontend, its clients or `sesa scale`s).
            if *id != FRONTEND && *id < SCALERS && self.lives.contains_key(id) {
                let status = match end {
                    NodeEnd::Exited(code) => format!("exit status {code}"),
                    NodeEnd::Crashed => "killed".to_string(),
                };
                self.requests
                    .exited
                    .borrow_mut()
                    .push_back((NodeId::new(*id), status));
            }
        }
        self.ended_seen = ended.len();
    }

    /// The frontend's events since the last call.
    fn new_events(&mut self) -> Vec<Event> {
        let events = self.events.events();
        let new = events[self.events_seen.min(events.len())..].to_vec();
        self.events_seen = events.len();
        new
    }

    /// Node ids whose life is running.
    pub fn running(&self, sim: &Sim) -> Vec<u32> {
        self.lives
            .iter()
            .filter(|(_, key)| sim.is_running(**key))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Node `id`'s running life.
    pub fn life(&self, id: u32) -> Option<NodeKey> {
        self.lives.get(&id).copied()
    }

    /// Kills node `id` (kill -9); whether it was running.
    pub fn crash(&self, sim: &Sim, id: u32) -> bool {
        self.lives.get(&id).is_some_and(|key| sim.crash(*key))
    }

    /// Sends `sesa scale --nodes target` from a client machine; its answer lands in
    /// [`AppRun::scaled`].
    pub fn scale(&mut self, sim: &Sim, target: u32) {
        let (Some(secret), Some(join)) = (
            self.requests.secret.borrow().clone(),
            self.requests.join.get(),
        ) else {
            return;
        };
        let n = self.scalers;
        self.scalers += 1;
        let scaled = self.scaled.clone();
        sim.start_node(spec(SCALERS + n, 1), move || async move {
            let answer = scale(NodeId::new(ADMIN_FIRST.get() + n), secret, join, target).await;
            scaled.borrow_mut().push((target, answer));
        });
    }

    /// Whether the frontend has yet to hear of nodes that ended.
    pub fn exits_unheard(&self) -> bool {
        !self.requests.exited.borrow().is_empty()
    }

    /// Whether a scale request is still waiting for its answer.
    pub fn scaling(&self) -> bool {
        self.scaled.borrow().len() < self.scalers as usize
    }

    /// The frontend's events as its console shows them, one line each.
    #[cfg(test)]
    pub fn event_lines(&self) -> Vec<String> {
        self.events.events().iter().map(Event::to_string).collect()
    }
}

/// A node: the node's life of every platform, on the simulated network.
async fn node(s: sesa_frontend::NodeSpec, apps: Apps) {
    let _ = sesa_node::run::run(NodeParams {
        id: s.id,
        secret: s.secret,
        frontend: s.join,
        registry: s.registry,
        addressing: Addressing::Own(ip_of(s.id.get()).into()),
        membership: MembershipConfig::tolerant_local(),
        pid: 0,
        platform: Platform::Simulated,
        memory_max: None,
        apps,
    })
    .await;
}

/// What `sesa scale` does: one call to the frontend's admin service.
async fn scale(
    me: NodeId,
    secret: Secret,
    join: SocketAddr,
    target: u32,
) -> Result<String, String> {
    let messenger = sesa_node::run::join_frontend(me, secret, join).await?;
    let admin = Client::<AdminService>::new(
        messenger,
        NodeId::FRONTEND,
        CoreId::new(0),
        EbbId::static_id(ADMIN_INDEX),
    );
    let reply = admin.call(Admin::Scale(target)).await;
    let _ = messenger.disconnect_all().await;
    match reply {
        Ok(AdminReply::Scaled(outcome)) => Ok(outcome),
        Ok(other) => Err(format!("answered {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// What a workload watches of its application while the faults run.
pub(super) trait Watch {
    /// The frontend's events since the last call (between turns).
    fn events(&mut self, _events: &[Event]) {}
    /// Whether a node may be killed now (a store: once it has repaired itself).
    fn may_kill(&self) -> bool {
        true
    }
    /// The schedule killed `node` (before the frontend has noticed).
    fn killed(&mut self, _node: u32) {}
    /// The fewest nodes a scale request asks for.
    fn min_nodes(&self) -> u32 {
        1
    }
}

/// A workload that watches nothing.
impl Watch for () {}

/// The fault phase of an application run: between turns, kill a node, cut one off
/// from the frontend or another node (healed later), reset connections, or ask for a
/// new number of nodes (1 to `nodes + 2`); at most one cut at a time, and a kill only
/// while two nodes run. (A node whose link to the frontend breaks is lost too: no node
/// outlives its frontend's connection.) Then the quiet phase's start: everything
/// healed, and the starting number of nodes asked for again.
pub(super) fn fault_phase<A: Application>(
    sim: &Sim,
    options: &Options,
    run: &mut AppRun<A>,
    watch: &mut dyn Watch,
    faults: &mut Faults,
) {
    let end = sim.now() + options.faults;
    let draw = |lo: u64, hi: u64| Duration::from_millis(lo + sim.below(hi - lo + 1));
    let mut heal_at: Option<Duration> = None;
    let mut resume: Option<(NodeKey, Duration)> = None;
    while sim.now() < end && run.result.borrow().is_none() {
        run.step(sim, draw(50, 400), watch);
        if !options.inject {
            continue;
        }
        if let Some(at) = heal_at {
            if sim.now() >= at {
                sim.heal();
                faults.note(sim, "heal", String::new());
                heal_at = None;
            }
            continue;
        }
        if let Some((key, at)) = resume {
            if sim.now() >= at {
                sim.resume(key);
                faults.note(sim, "resume", String::new());
                resume = None;
            }
            continue;
        }
        let running = run.running(sim);
        if running.is_empty() {
            continue;
        }
        let victim = running[sim.below(running.len() as u64) as usize];
        // The frontend or another running node.
        let other = {
            let mut others: Vec<u32> = running.iter().copied().filter(|&n| n != victim).collect();
            others.push(FRONTEND);
            others[sim.below(others.len() as u64) as usize]
        };
        match sim.below(10) {
            0..=1 if running.len() >= 2 && (options.careless || watch.may_kill()) => {
                // A careless run takes a second node with the first.
                let second = running
                    .iter()
                    .copied()
                    .find(|&n| n != victim)
                    .filter(|_| options.careless && running.len() >= 3);
                for id in std::iter::once(victim).chain(second) {
                    if run.crash(sim, id) {
                        watch.killed(id);
                        faults.note(sim, "crash", format!("node {id}"));
                    }
                }
            }
            2..=4 => heal_at = Some(super::cut(sim, options.profile, faults, victim, other)),
            5 => {
                let n = sim.reset(ip_of(victim), ip_of(other));
                faults.note(
                    sim,
                    "reset",
                    format!("{n} connection(s) between nodes {victim} and {other}"),
                );
            }
            8 if options.profile == Profile::Wide => {
                if let Some(key) = run.life(victim)
                    && let Some(at) = super::pause(sim, faults, victim, key)
                {
                    resume = Some((key, at));
                }
            }
            6..=7 if !run.scaling() => {
                let target =
                    (1 + sim.below(u64::from(options.nodes) + 2) as u32).max(watch.min_nodes());
                run.scale(sim, target);
                faults.note(sim, "scale", format!("to {target} node(s)"));
            }
            _ => {}
        }
    }
    sim.heal();
    if let Some((key, _)) = resume {
        sim.resume(key);
    }
    faults.note(sim, "quiet", "(healed)".into());
    run.scale(sim, options.nodes.max(1));
    faults.note(sim, "scale", format!("to {} node(s)", options.nodes.max(1)));
}
