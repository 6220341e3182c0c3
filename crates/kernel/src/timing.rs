//! Per-request stage timing: where the time of one request goes, for a debug log line.
//!
//! A request runs inside [`scope`]; anything it calls, in any crate, marks the end of a stage
//! with [`mark`]: the time since the previous mark (or the start) is booked to that stage.
//! Outside a scope `mark` does nothing. The cost inside one is an `Instant::now()` and a push
//! onto a short vector, so it is always on; the caller decides whether to log the result.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

tokio::task_local! {
    static STAGES: RefCell<Stages>;
}

/// The stages of one request, in the order they ended.
#[derive(Debug, Clone)]
pub struct Stages {
    start: Instant,
    last: Instant,
    stages: Vec<(&'static str, Duration)>,
}

impl Stages {
    fn new() -> Stages {
        let now = Instant::now();
        Stages { start: now, last: now, stages: Vec::with_capacity(24) }
    }

    fn mark(&mut self, stage: &'static str) {
        let now = Instant::now();
        self.stages.push((stage, now - self.last));
        self.last = now;
    }

    /// From the start of the scope to the last mark.
    pub fn total(&self) -> Duration {
        self.last - self.start
    }

    /// Each stage's time, a stage marked several times summed, in the order first marked.
    pub fn summed(&self) -> Vec<(&'static str, Duration)> {
        let mut out: Vec<(&'static str, Duration)> = Vec::new();
        for (name, d) in &self.stages {
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t += *d,
                None => out.push((name, *d)),
            }
        }
        out
    }
}

/// `stage=12us stage=340us ...`, microseconds.
impl fmt::Display for Stages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, d)) in self.summed().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={}us", d.as_micros())?;
        }
        Ok(())
    }
}

/// Runs `fut` with a fresh stage recorder; returns its output and the stages it marked. A
/// scope inside a scope records on its own (the outer one sees its time in its next mark).
pub async fn scope<F: Future>(fut: F) -> (F::Output, Stages) {
    STAGES
        .scope(RefCell::new(Stages::new()), async move {
            let out = fut.await;
            let stages = STAGES.with(|s| s.borrow().clone());
            (out, stages)
        })
        .await
}

/// Ends the stage `stage` of the current request (no-op outside [`scope`]).
pub fn mark(stage: &'static str) {
    let _ = STAGES.try_with(|s| s.borrow_mut().mark(stage));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_are_booked_in_order_and_summed() {
        mark("outside");
        let ((), s) = scope(async {
            mark("a");
            mark("b");
            mark("a");
        })
        .await;
        let names: Vec<&str> = s.summed().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(s.to_string().starts_with("a="));
        assert!(s.total() >= s.summed().iter().map(|(_, d)| *d).sum());
    }
}
