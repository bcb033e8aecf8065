//! [`Central`]: one rep on a home core, reached from every other core by function
//! shipping — the paper's simplest EBB ("a single representative located on the
//! instantiating node", section 4.4), and the starting point it recommends evolving from.

use alloc::boxed::Box;
use sesa_ebb::{CoreId, EbbError, EbbNode, EbbRef, EbbRoot, Install, MissContext, MissError};

use crate::{EventError, spawn_on};

type Init<R> = Box<dyn FnOnce() -> R + Send>;

/// The root of a central EBB: builds the one rep on `home`'s first access and gives
/// every other core a forwarding rep.
pub struct Central<R> {
    home: CoreId,
    init: spin::Mutex<Option<Init<R>>>,
}

/// What a core's table holds for a central EBB.
pub enum CentralRep<R> {
    /// The rep itself (home core only).
    Home(R),
    /// A forwarding rep: calls are shipped to `home`.
    Forward {
        /// Where the rep lives.
        home: CoreId,
    },
}

impl<R: 'static> EbbRoot for Central<R> {
    type Rep = CentralRep<R>;

    fn miss(&self, cx: &MissContext<'_>) -> Result<Install<CentralRep<R>>, MissError> {
        if cx.core() != self.home {
            return Ok(Install::local(Box::new(CentralRep::Forward {
                home: self.home,
            })));
        }
        let init =
            self.init.lock().take().ok_or_else(|| {
                MissError::new("the home rep was already built on another binding")
            })?;
        Ok(Install::local(Box::new(CentralRep::Home(init()))))
    }
}

/// A reference to a central EBB.
pub struct CentralRef<R>(EbbRef<CentralRep<R>>);

impl<R> Clone for CentralRef<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for CentralRef<R> {}

impl<R: 'static> Central<R> {
    /// Creates a central EBB on the current node whose rep `init()` builds on `home`.
    /// The rep need not be `Send`: it is built, used and dropped on `home` only.
    ///
    /// # Errors
    /// [`EbbError::NotOnCore`] off a core, or the node's creation errors.
    pub fn create(
        home: CoreId,
        init: impl FnOnce() -> R + Send + 'static,
    ) -> Result<CentralRef<R>, EbbError> {
        let root = Central {
            home,
            init: spin::Mutex::new(Some(Box::new(init))),
        };
        Ok(CentralRef(EbbNode::current()?.create(root)?))
    }
}

impl<R: 'static> CentralRef<R> {
    /// The underlying EBB reference.
    pub fn ebb(self) -> EbbRef<CentralRep<R>> {
        self.0
    }

    /// Runs `f` on the rep synchronously if the caller is on the home core; `None` on any
    /// other core (or if the EBB was destroyed). For code that knows it runs at home,
    /// such as the tasks a central service spawns there.
    pub fn with_home<T>(self, f: impl FnOnce(&R) -> T) -> Option<T> {
        self.0
            .try_with(|rep| match rep {
                CentralRep::Home(rep) => Some(f(rep)),
                CentralRep::Forward { .. } => None,
            })
            .ok()
            .flatten()
    }

    /// Runs `f` on the rep: directly on the home core, shipped there from any other.
    ///
    /// # Errors
    /// [`EventError::Ebb`] if the EBB was destroyed; the shipping errors of
    /// [`spawn_on`].
    pub async fn call<F, T>(self, f: F) -> Result<T, EventError>
    where
        F: FnOnce(&R) -> T + Send + 'static,
        T: Send + 'static,
    {
        let home = self.0.try_with(|rep| match rep {
            CentralRep::Home(_) => None,
            CentralRep::Forward { home } => Some(*home),
        })?;
        match home {
            None => self.on_home(f),
            Some(home) => spawn_on(home, move || self.on_home(f)).await?,
        }
    }

    fn on_home<F: FnOnce(&R) -> T, T>(self, f: F) -> Result<T, EventError> {
        self.0
            .try_with(|rep| match rep {
                CentralRep::Home(rep) => Ok(f(rep)),
                CentralRep::Forward { home } => Err(EbbError::MissRefused {
                    id: self.0.id(),
                    core: *home,
                    source: MissError::new("forwarded to a core that is not the home"),
                }),
            })?
            .map_err(EventError::from)
    }
}
