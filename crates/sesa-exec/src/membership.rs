//! Membership and failure detection: SWIM (with the Suspicion and Infection extensions)
//! through the `foca` crate, which does no I/O of its own. Its datagrams travel as
//! `Gossip` frames over the messenger's authenticated connections, and its timers are
//! platform sleeps. So the same code runs hosted and, later, under simulation.
//!
//! # Identities
//! A member is (node id, generation, address). A restarted node comes back with a higher
//! generation, so the cluster tells it from its previous, dead life: foca reports a
//! `Rename` and the new identity is up.
//!
//! # Connections
//! foca says "send these bytes to member M". If a connection to M exists, they go at
//! once. Otherwise the node with the **higher** id dials the lower one (one connection
//! per pair, no races), and a datagram for a lower-id member we are not connected to is
//! dropped. SWIM tolerates loss, and that member's own probes will open the connection.
//!
//! # Timing
//! [`MembershipConfig::fast_local`] probes every 100 ms and declares a silent member down
//! about half a second later: a crashed node is detected in well under a second on one
//! machine (measured by `tests/membership.rs`).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::net::SocketAddr;
use core::num::{NonZeroU8, NonZeroUsize};
use core::time::Duration;

use foca::{Config, Foca, NoCustomBroadcast, Notification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use sesa_ebb::NodeId;
use sesa_event::{Central, CentralRef, EventError};

use crate::MessengerRef;

/// A member of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node id.
    pub node: NodeId,
    /// Its generation (higher after each restart).
    pub generation: u64,
    /// Where its messenger listens.
    pub addr: SocketAddr,
}

impl foca::Identity for NodeIdentity {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            generation: self.generation + 1,
            ..*self
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// A change in membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member became active.
    Up(NodeIdentity),
    /// A member was declared down (crashed, partitioned, or left).
    Down(NodeIdentity),
}

/// How fast the protocol runs.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// foca's settings.
    pub swim: Config,
}

impl MembershipConfig {
    /// For nodes on one machine or one LAN segment with sub-millisecond latency: probe
    /// every 100 ms, 50 ms to answer, down after 400 ms of suspicion.
    pub fn fast_local() -> Self {
        let nonzero = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        let mut swim = Config::simple();
        swim.probe_period = Duration::from_millis(100);
        swim.probe_rtt = Duration::from_millis(50);
        swim.num_indirect_probes = nonzero(2);
        swim.max_transmissions = NonZeroU8::new(6).unwrap_or(NonZeroU8::MIN);
        swim.suspect_to_down_after = Duration::from_millis(400);
        swim.notify_down_members = true;
        // Re-announce now and then, so partitions heal and restarted members are found.
        swim.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(2),
            num_members: nonzero(1),
        });
        swim.periodic_gossip = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(100),
            num_members: nonzero(3),
        });
        MembershipConfig { swim }
    }

    /// For nodes sharing an oversubscribed machine (several spinning node processes on
    /// a few CPUs): probe every 300 ms, 150 ms to answer, down after 1.5 s of suspicion,
    /// so a node that is only slow to be scheduled is not declared down. A hung node is
    /// detected in about 2 s; a crashed one at once by its connection reset.
    pub fn tolerant_local() -> Self {
        let mut config = Self::fast_local();
        config.swim.probe_period = Duration::from_millis(300);
        config.swim.probe_rtt = Duration::from_millis(150);
        config.swim.suspect_to_down_after = Duration::from_millis(1500);
        config
    }
}

type Swim = Foca<NodeIdentity, PostcardCodec, SmallRng, NoCustomBroadcast>;
type Listener = Box<dyn Fn(MemberEvent)>;

/// The membership service's state on the home core.
pub struct Membership {
    swim: RefCell<Swim>,
    messenger: MessengerRef,
    me: NodeIdentity,
    active: RefCell<BTreeMap<NodeId, NodeIdentity>>,
    listeners: RefCell<Vec<Listener>>,
    /// The service's own handle, for the tasks it spawns (set by `start`).
    this: Cell<Option<MembershipRef>>,
    /// Members being dialed, so a burst of datagrams opens one connection, not many.
    dialing: RefCell<alloc::collections::BTreeSet<NodeId>>,
}

/// What foca asked for during one call, acted on after it returns (so foca is never
/// re-entered).
#[derive(Default)]
struct Effects {
    send: Vec<(NodeIdentity, Vec<u8>)>,
    timers: Vec<(Timer<NodeIdentity>, Duration)>,
    events: Vec<MemberEvent>,
}

impl foca::Runtime<NodeIdentity> for Effects {
    fn notify(&mut self, notification: Notification<'_, NodeIdentity>) {
        match notification {
            Notification::MemberUp(id) => self.events.push(MemberEvent::Up(*id)),
            Notification::MemberDown(id) => self.events.push(MemberEvent::Down(*id)),
            Notification::Rename(old, new) => {
                self.events.push(MemberEvent::Down(*old));
                self.events.push(MemberEvent::Up(*new));
            }
            _ => {}
        }
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        self.send.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<NodeIdentity>, after: Duration) {
        self.timers.push((event, after));
    }
}

/// A `Copy` handle to this node's membership service.
#[derive(Clone, Copy)]
pub struct MembershipRef(CentralRef<Membership>);

impl Membership {
    /// Starts the membership service on the messenger's home core, for this node at
    /// `addr` (where its messenger listens).
    ///
    /// # Errors
    /// Off a core, or the messenger cannot be reached.
    pub async fn start(
        messenger: MessengerRef,
        addr: SocketAddr,
        config: MembershipConfig,
    ) -> Result<MembershipRef, EventError> {
        let (me, home) = messenger.identity_and_home().await?;
        let me = NodeIdentity {
            node: me.node,
            generation: me.generation,
            addr,
        };
        let mut seed = [0u8; 32];
        sesa_event::fill_random(&mut seed);
        let central = Central::create(home, move || Membership {
            swim: RefCell::new(Foca::new(
                me,
                config.swim,
                SmallRng::from_seed(seed),
                PostcardCodec,
            )),
            messenger,
            me,
            active: RefCell::new(BTreeMap::new()),
            listeners: RefCell::new(Vec::new()),
            this: Cell::new(None),
            dialing: RefCell::new(alloc::collections::BTreeSet::new()),
        })
        .map_err(EventError::from)?;
        let this = MembershipRef(central);
        this.0
            .call(move |m| {
                m.this.set(Some(this));
                let sink = Rc::new(move |_from: crate::Identity, data: &[u8]| {
                    this.with_home(|m| m.apply(|swim, fx| swim.handle_data(data, fx)));
                });
                m.messenger.with_home(|msg| msg.set_gossip_sink(sink));
            })
            .await?;
        Ok(this)
    }

    /// Runs one foca operation and acts on what it asked for.
    fn apply(&self, op: impl FnOnce(&mut Swim, &mut Effects) -> Result<(), foca::Error>) {
        let mut fx = Effects::default();
        if let Err(e) = op(&mut self.swim.borrow_mut(), &mut fx) {
            // Bad datagrams from a peer land here: logged, never fatal.
            tracing::debug!(error = %e, "membership protocol error");
        }
        self.act(fx);
    }

    fn act(&self, fx: Effects) {
        for (to, data) in fx.send {
            self.send(to, data);
        }
        for (timer, after) in fx.timers {
            let this = self.this();
            sesa_event::spawn_local(async move {
                sesa_event::sleep(after).await;
                this.with_home(|m| m.apply(|swim, fx| swim.handle_timer(timer, fx)));
            });
        }
        for event in fx.events {
            match event {
                MemberEvent::Up(id) => {
                    self.active.borrow_mut().insert(id.node, id);
                }
                MemberEvent::Down(id) => {
                    let mut active = self.active.borrow_mut();
                    if active.get(&id.node) == Some(&id) {
                        active.remove(&id.node);
                    }
                }
            }
            tracing::info!(?event, "membership");
            for listener in self.listeners.borrow().iter() {
                listener(event);
            }
        }
    }

    fn this(&self) -> MembershipRef {
        self.this
            .get()
            .unwrap_or_else(|| unreachable!("the handle is set before any timer or datagram"))
    }

    fn send(&self, to: NodeIdentity, data: Vec<u8>) {
        let sent = self
            .messenger
            .with_home(|m| m.send_gossip(to.node, &data))
            .unwrap_or(false);
        if sent || to.node >= self.me.node {
            // Sent; or ourselves; or a higher-id member, which dials us.
            return;
        }
        // A lower-id member we are not connected to: dial it (once), then deliver.
        if !self.dialing.borrow_mut().insert(to.node) {
            return;
        }
        let (messenger, this) = (self.messenger, self.this());
        sesa_event::spawn_local(async move {
            match messenger.connect(to.addr).await {
                Ok(_) => {
                    messenger.with_home(|m| m.send_gossip(to.node, &data));
                }
                Err(e) => tracing::debug!(node = %to.node, error = %e, "cannot reach member"),
            }
            this.with_home(|m| m.dialing.borrow_mut().remove(&to.node));
        });
    }
}

impl MembershipRef {
    /// Runs `f` on the service's state; only on its home core, synchronously.
    fn with_home<T>(self, f: impl FnOnce(&Membership) -> T) -> Option<T> {
        self.0.with_home(f)
    }

    /// Joins the cluster that `seed` belongs to (any live member will do).
    ///
    /// # Errors
    /// The service cannot be reached.
    pub async fn announce(self, seed: NodeIdentity) -> Result<(), EventError> {
        self.0
            .call(move |m| m.apply(|swim, fx| swim.announce(seed, fx)))
            .await
    }

    /// The active members, this node included, by node id.
    ///
    /// # Errors
    /// The service cannot be reached.
    pub async fn members(self) -> Result<Vec<NodeIdentity>, EventError> {
        self.0
            .call(|m| {
                let mut all: Vec<_> = m.active.borrow().values().copied().collect();
                all.push(m.me);
                all.sort_by_key(|id| id.node);
                all
            })
            .await
    }

    /// Calls `listener` on the home core for every membership change from now on.
    ///
    /// # Errors
    /// The service cannot be reached.
    pub async fn subscribe(
        self,
        listener: impl Fn(MemberEvent) + Send + 'static,
    ) -> Result<(), EventError> {
        self.0
            .call(move |m| m.listeners.borrow_mut().push(Box::new(listener)))
            .await
    }

    /// Leaves the cluster gracefully: members learn it at once instead of by timeout.
    ///
    /// # Errors
    /// The service cannot be reached.
    pub async fn leave(self) -> Result<(), EventError> {
        self.0
            .call(|m| m.apply(|swim, fx| swim.leave_cluster(fx)))
            .await
    }
}
