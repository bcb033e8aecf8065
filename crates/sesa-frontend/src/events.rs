//! What the frontend reports about its nodes, as values: an [`EventSink`] receives them
//! (the `sesa` command prints them on its console, [`Console`]; a test or the simulator
//! can record them instead).

use std::fmt;

use sesa_ebb::NodeId;

/// Something that happened to the application's nodes, or that its frontend says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node was launched.
    Started {
        /// The node.
        node: NodeId,
        /// Its process (a native node's QEMU).
        pid: u32,
    },
    /// A node registered: it is ready for work.
    Joined {
        /// The node.
        node: NodeId,
        /// Its cores.
        cores: u32,
    },
    /// A node was asked to leave (a planned shrink): it drains first.
    Leaving {
        /// The node.
        node: NodeId,
    },
    /// A node drained and left.
    Left {
        /// The node.
        node: NodeId,
    },
    /// A node asked to stop did not within its grace: its process is killed.
    Killed {
        /// The node.
        node: NodeId,
    },
    /// A node was lost.
    Lost {
        /// The node.
        node: NodeId,
        /// How: `exited (<status>)`, `declared down`, `lost (<why>)`.
        cause: String,
        /// What the application does about it.
        then: String,
    },
    /// A node serves clients at `addr` (a server application's address for clients:
    /// the line they look for).
    Serving {
        /// The node.
        node: NodeId,
        /// Where clients reach it.
        addr: std::net::SocketAddr,
    },
    /// The application took a new view of its members (after the roster's
    /// [`crate::roster::Action::ChangeView`]).
    View {
        /// The view's number.
        epoch: u64,
        /// Its members.
        members: Vec<NodeId>,
        /// Whether the application's state has moved to it (a store: every key on its
        /// owners), so that another change is safe.
        settled: bool,
        /// What the application says of it (the console's line).
        detail: String,
    },
    /// Anything else the application reports.
    Note(String),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Started { node, pid } => write!(f, "node {node} started (pid {pid})"),
            Event::Joined { node, cores } => write!(f, "node {node} joined with {cores} cores"),
            Event::Leaving { node } => write!(f, "node {node} leaving"),
            Event::Left { node } => write!(f, "node {node} left"),
            Event::Killed { node } => write!(f, "node {node} did not stop in time: killing it"),
            Event::Lost { node, cause, then } => write!(f, "node {node} {cause}; {then}"),
            Event::Serving { node, addr } => write!(f, "node {node} listening on {addr}"),
            Event::View { detail, .. } => f.write_str(detail),
            Event::Note(text) => f.write_str(text),
        }
    }
}

/// Where the frontend's events go.
pub trait EventSink: Send + Sync {
    /// Takes one event.
    fn report(&self, event: Event);
}

/// The frontend's console (what the `sesa` command and [`crate::main`] use): events on
/// stderr as `sesa: <event>`, except where a node serves clients
/// ([`Event::Serving`]), which goes to stdout as it is, for the clients (and scripts)
/// that look for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Console;

impl EventSink for Console {
    fn report(&self, event: Event) {
        use std::io::Write as _;
        match event {
            Event::Serving { .. } => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{event}");
                let _ = out.flush();
            }
            _ => eprintln!("sesa: {event}"),
        }
    }
}

/// Events kept in memory, in order (for tests and the simulator).
#[derive(Debug, Default)]
pub struct Recorded(std::sync::Mutex<Vec<Event>>);

impl Recorded {
    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl EventSink for Recorded {
    fn report(&self, event: Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_the_lines_the_frontend_always_printed() {
        let lines = [
            (
                Event::Serving {
                    node: NodeId::new(2),
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 11212)),
                },
                "node 2 listening on 127.0.0.1:11212",
            ),
            (
                Event::Started {
                    node: NodeId::new(1),
                    pid: 42,
                },
                "node 1 started (pid 42)",
            ),
            (
                Event::Joined {
                    node: NodeId::new(2),
                    cores: 4,
                },
                "node 2 joined with 4 cores",
            ),
            (
                Event::Leaving {
                    node: NodeId::new(3),
                },
                "node 3 leaving",
            ),
            (
                Event::Left {
                    node: NodeId::new(3),
                },
                "node 3 left",
            ),
            (
                Event::Lost {
                    node: NodeId::new(4),
                    cause: "declared down".into(),
                    then: "its keys get new replicas".into(),
                },
                "node 4 declared down; its keys get new replicas",
            ),
        ];
        let recorded = Recorded::default();
        for (event, line) in lines {
            assert_eq!(event.to_string(), line);
            recorded.report(event);
        }
        assert_eq!(recorded.events().len(), 6);
    }
}
