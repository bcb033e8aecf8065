//! The platform conformance suite (`sesa_event::conformance`) on the simulated platform,
//! over several seeds (the scheduler's choices differ with each).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use sesa_sim::{NodeSpec, Sim, SimConfig};

type Results = Vec<(&'static str, Result<(), String>)>;

fn suite(seed: u64, cores: usize) {
    let sim = Sim::new(SimConfig::with_seed(seed));
    let results: Rc<RefCell<Option<Results>>> = Rc::default();
    let out = results.clone();
    let spec = NodeSpec {
        id: 1,
        cores,
        ip: [10, 0, 0, 1].into(),
    };
    sim.start_node(spec, move || async move {
        let r = sesa_event::conformance::run(|check| check.runs_here()).await;
        *out.borrow_mut() = Some(r);
    });
    let done = sim.run_until(Duration::from_secs(600), || results.borrow().is_some());
    assert!(done, "seed {seed}: the suite did not finish");
    let results = results.borrow_mut().take().unwrap();
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "seed {seed}, {cores} core(s): {failed:#?}"
    );
    // The one panic is the planned one, isolated.
    let panics = sim.panics();
    assert!(
        panics.len() == 1 && panics[0].contains("a planned panic of the conformance suite"),
        "seed {seed}: {panics:#?}"
    );
}

#[test]
fn the_simulated_platform_conforms() {
    for seed in 0..8 {
        suite(seed, 1 + (seed as usize % 3));
    }
}
