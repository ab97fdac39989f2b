//! What a chaos round breaks, and when: a pure function of the run's seed and the round number,
//! so a failing round is replayed from the two numbers it prints.
//!
//! A [`RoundPlan`] lists one to three faults at random offsets in the round's window, each on
//! a different target (a process, a server or a link), so no fault heals another. Each fault
//! becomes a start and, where it lasts, a heal [`Action`] on the round's [`timeline`].

use std::fmt;
use std::time::Duration;

use rand::{RngExt as _, SeedableRng as _};
use rand_pcg::Pcg64;

/// One of the pipelines a chaos run drives at once: a group with its replicator and worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pipe {
    /// `worker postgres`, with a rule and a route.
    Postgres,
    /// `worker file`.
    File,
    /// `worker webhook`, posting to a receiver that fails at random.
    Webhook,
}

impl Pipe {
    pub const ALL: [Pipe; 3] = [Pipe::Postgres, Pipe::File, Pipe::Webhook];

    /// The group name.
    pub fn group(self) -> &'static str {
        match self {
            Pipe::Postgres => "chaos_pg",
            Pipe::File => "chaos_file",
            Pipe::Webhook => "chaos_hook",
        }
    }
}

/// A pg_flo process of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proc {
    Replicator(Pipe),
    Worker(Pipe),
}

impl Proc {
    pub const ALL: [Proc; 6] = [
        Proc::Replicator(Pipe::Postgres),
        Proc::Replicator(Pipe::File),
        Proc::Replicator(Pipe::Webhook),
        Proc::Worker(Pipe::Postgres),
        Proc::Worker(Pipe::File),
        Proc::Worker(Pipe::Webhook),
    ];
}

impl fmt::Display for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proc::Replicator(p) => write!(f, "replicator-{}", p.group()),
            Proc::Worker(p) => write!(f, "worker-{}", p.group()),
        }
    }
}

/// A network link, through its fault-injecting proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Link {
    /// Source PostgreSQL -> replicators.
    Source,
    /// Replicators -> NATS.
    Publish,
    /// NATS -> workers.
    Consume,
    /// Postgres worker -> target PostgreSQL.
    Target,
    /// Webhook worker -> receiver.
    Webhook,
}

impl Link {
    pub const ALL: [Link; 5] = [
        Link::Source,
        Link::Publish,
        Link::Consume,
        Link::Target,
        Link::Webhook,
    ];
}

/// A fault, with how long it lasts where it lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`; the supervisor starts the process again after `down`.
    Kill {
        proc: Proc,
        down: Duration,
    },
    /// SIGSTOP, SIGCONT after `held`.
    Pause {
        proc: Proc,
        held: Duration,
    },
    /// `kill -9` of nats-server, started again (same port and store) after `down`.
    KillNats {
        down: Duration,
    },
    PauseNats {
        held: Duration,
    },
    /// SIGKILL of every target PostgreSQL process; crash recovery after `down`.
    CrashTarget {
        down: Duration,
    },
    PauseTarget {
        held: Duration,
    },
    /// The source PostgreSQL stopped (`crash`: every process killed, else a fast shutdown)
    /// and started again.
    RestartSource {
        crash: bool,
    },
    /// Every connection of the link dropped at once.
    Cut(Link),
    /// The next connection to send this many more bytes upstream is dropped right after them
    /// (in the middle of a message).
    CutAfter(Link, u64),
    /// No byte moves either way for `held` (a partition that heals before TCP gives up).
    Freeze {
        link: Link,
        held: Duration,
    },
    /// Every chunk waits `by` before it is forwarded, for `held`.
    Delay {
        link: Link,
        by: Duration,
        held: Duration,
    },
}

/// What a fault hits: two faults of a round never share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hit {
    Proc(Proc),
    Nats,
    TargetPostgres,
    SourcePostgres,
    Link(Link),
}

impl Fault {
    /// The fault's kind, for the report's counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill {
                proc: Proc::Replicator(_),
                ..
            } => "kill_replicator",
            Fault::Kill {
                proc: Proc::Worker(_),
                ..
            } => "kill_worker",
            Fault::Pause {
                proc: Proc::Replicator(_),
                ..
            } => "pause_replicator",
            Fault::Pause {
                proc: Proc::Worker(_),
                ..
            } => "pause_worker",
            Fault::KillNats { .. } => "kill_nats",
            Fault::PauseNats { .. } => "pause_nats",
            Fault::CrashTarget { .. } => "crash_target",
            Fault::PauseTarget { .. } => "pause_target",
            Fault::RestartSource { crash: true } => "crash_source",
            Fault::RestartSource { crash: false } => "restart_source",
            Fault::Cut(_) => "cut_link",
            Fault::CutAfter(..) => "cut_link_mid_message",
            Fault::Freeze { .. } => "freeze_link",
            Fault::Delay { .. } => "delay_link",
        }
    }

    fn hit(&self) -> Hit {
        match *self {
            Fault::Kill { proc, .. } | Fault::Pause { proc, .. } => Hit::Proc(proc),
            Fault::KillNats { .. } | Fault::PauseNats { .. } => Hit::Nats,
            Fault::CrashTarget { .. } | Fault::PauseTarget { .. } => Hit::TargetPostgres,
            Fault::RestartSource { .. } => Hit::SourcePostgres,
            Fault::Cut(link)
            | Fault::CutAfter(link, _)
            | Fault::Freeze { link, .. }
            | Fault::Delay { link, .. } => Hit::Link(link),
        }
    }

    /// The fault as actions: its start at `at` and, where it lasts, its heal.
    fn actions(&self, at: Duration) -> Vec<(Duration, Action)> {
        match *self {
            Fault::Kill { proc, down } => {
                vec![(at, Action::Kill(proc)), (at + down, Action::Release(proc))]
            }
            Fault::Pause { proc, held } => {
                vec![(at, Action::Stop(proc)), (at + held, Action::Cont(proc))]
            }
            Fault::KillNats { down } => {
                vec![(at, Action::KillNats), (at + down, Action::StartNats)]
            }
            Fault::PauseNats { held } => {
                vec![(at, Action::StopNats), (at + held, Action::ContNats)]
            }
            Fault::CrashTarget { down } => {
                vec![(at, Action::CrashTarget), (at + down, Action::StartTarget)]
            }
            Fault::PauseTarget { held } => {
                vec![(at, Action::StopTarget), (at + held, Action::ContTarget)]
            }
            Fault::RestartSource { crash } => vec![(at, Action::RestartSource { crash })],
            Fault::Cut(link) => vec![(at, Action::Cut(link))],
            Fault::CutAfter(link, bytes) => vec![(at, Action::CutAfter(link, bytes))],
            Fault::Freeze { link, held } => {
                vec![(at, Action::Freeze(link)), (at + held, Action::Thaw(link))]
            }
            Fault::Delay { link, by, held } => vec![
                (at, Action::Delay(link, by)),
                (at + held, Action::Delay(link, Duration::ZERO)),
            ],
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_millis();
        match self {
            Fault::Kill { proc, down } => write!(f, "kill -9 {proc}, down {} ms", ms(*down)),
            Fault::Pause { proc, held } => write!(f, "SIGSTOP {proc} for {} ms", ms(*held)),
            Fault::KillNats { down } => write!(f, "kill -9 nats-server, down {} ms", ms(*down)),
            Fault::PauseNats { held } => write!(f, "SIGSTOP nats-server for {} ms", ms(*held)),
            Fault::CrashTarget { down } => {
                write!(f, "SIGKILL target postgres, down {} ms", ms(*down))
            }
            Fault::PauseTarget { held } => {
                write!(f, "SIGSTOP target postgres for {} ms", ms(*held))
            }
            Fault::RestartSource { crash: true } => write!(f, "SIGKILL + start source postgres"),
            Fault::RestartSource { crash: false } => write!(f, "restart source postgres"),
            Fault::Cut(link) => write!(f, "cut {link:?} link"),
            Fault::CutAfter(link, n) => write!(f, "cut {link:?} link after {n} bytes"),
            Fault::Freeze { link, held } => write!(f, "freeze {link:?} link for {} ms", ms(*held)),
            Fault::Delay { link, by, held } => write!(
                f,
                "delay {link:?} link by {} ms per chunk for {} ms",
                ms(*by),
                ms(*held)
            ),
        }
    }
}

/// One step of a round's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `kill -9`, and keep it down until [`Action::Release`].
    Kill(Proc),
    /// Let the supervisor start it again.
    Release(Proc),
    Stop(Proc),
    Cont(Proc),
    KillNats,
    StartNats,
    StopNats,
    ContNats,
    CrashTarget,
    StartTarget,
    StopTarget,
    ContTarget,
    RestartSource {
        crash: bool,
    },
    Cut(Link),
    CutAfter(Link, u64),
    Freeze(Link),
    Thaw(Link),
    /// Zero ends the delay.
    Delay(Link, Duration),
}

/// A fault at its offset in the round's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub at: Duration,
    pub fault: Fault,
}

/// What one round does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundPlan {
    pub seed: u64,
    pub round: u32,
    /// How long the workload runs while the faults happen.
    pub window: Duration,
    /// By offset.
    pub faults: Vec<Scheduled>,
    /// The seed of the round's workload clients.
    pub workload_seed: u64,
}

impl fmt::Display for RoundPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "round {} (seed {}, replay: scripts/chaos.sh 1 {} {}):",
            self.round, self.seed, self.seed, self.round
        )?;
        for s in &self.faults {
            write!(f, "\n  at {:>5} ms: {}", s.at.as_millis(), s.fault)?;
        }
        Ok(())
    }
}

/// The plan of round `round` of the run seeded with `seed`.
pub fn plan_round(seed: u64, round: u32, window: Duration) -> RoundPlan {
    // One generator per round: a round's plan does not depend on the rounds before it.
    let mut rng = Pcg64::seed_from_u64(seed ^ (u64::from(round) << 32 | u64::from(round)));
    let workload_seed = rng.random();
    let wanted = rng.random_range(1..=3usize);
    let mut faults: Vec<Scheduled> = Vec::new();
    let mut attempts = 0;
    while faults.len() < wanted && attempts < 20 {
        attempts += 1;
        let fault = random_fault(&mut rng);
        if faults.iter().any(|s| s.fault.hit() == fault.hit()) {
            continue;
        }
        // Late enough for the workload to be running, early enough to heal in the window.
        let window_ms = u64::try_from(window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1000);
        let at = Duration::from_millis(rng.random_range(window_ms / 10..window_ms * 7 / 10));
        faults.push(Scheduled { at, fault });
    }
    faults.sort_by_key(|s| s.at);
    RoundPlan {
        seed,
        round,
        window,
        faults,
        workload_seed,
    }
}

fn random_fault(rng: &mut Pcg64) -> Fault {
    let ms = |rng: &mut Pcg64, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..=hi));
    let proc = Proc::ALL[rng.random_range(0..Proc::ALL.len())];
    let link = Link::ALL[rng.random_range(0..Link::ALL.len())];
    // Weights: processes and links are hit most, servers less often (they take longer).
    match rng.random_range(0..100u32) {
        0..=17 => Fault::Kill {
            proc,
            down: ms(rng, 0, 2000),
        },
        18..=29 => Fault::Pause {
            proc,
            held: ms(rng, 200, 3000),
        },
        30..=35 => Fault::KillNats {
            down: ms(rng, 0, 2000),
        },
        36..=40 => Fault::PauseNats {
            held: ms(rng, 200, 3000),
        },
        41..=46 => Fault::CrashTarget {
            down: ms(rng, 0, 2000),
        },
        47..=50 => Fault::PauseTarget {
            held: ms(rng, 200, 2500),
        },
        51..=57 => Fault::RestartSource {
            crash: rng.random_bool(0.5),
        },
        58..=69 => Fault::Cut(link),
        70..=81 => Fault::CutAfter(link, rng.random_range(1..=30_000)),
        82..=91 => Fault::Freeze {
            link,
            held: ms(rng, 200, 4000),
        },
        _ => Fault::Delay {
            link,
            by: ms(rng, 5, 200),
            held: ms(rng, 500, 3000),
        },
    }
}

/// The round's actions in time order (a fault's heal after its start; ties keep plan order).
pub fn timeline(plan: &RoundPlan) -> Vec<(Duration, Action)> {
    let mut steps: Vec<(Duration, Action)> = plan
        .faults
        .iter()
        .flat_map(|s| s.fault.actions(s.at))
        .collect();
    steps.sort_by_key(|(at, _)| *at);
    steps
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use std::collections::BTreeSet;

    const WINDOW: Duration = Duration::from_secs(8);

    #[test]
    fn a_round_is_a_function_of_seed_and_round() {
        for round in 0..20 {
            assert_eq!(plan_round(7, round, WINDOW), plan_round(7, round, WINDOW));
        }
        let runs: BTreeSet<String> = (0..20)
            .map(|r| format!("{:?}", plan_round(7, r, WINDOW).faults))
            .collect();
        assert!(runs.len() > 15, "rounds barely differ: {runs:?}");
        assert_ne!(
            plan_round(7, 3, WINDOW).faults,
            plan_round(8, 3, WINDOW).faults
        );
    }

    #[test]
    fn one_to_three_faults_on_distinct_targets_inside_the_window() {
        for seed in 0..30 {
            for round in 0..50 {
                let plan = plan_round(seed, round, WINDOW);
                assert!((1..=3).contains(&plan.faults.len()), "{plan}");
                for (i, a) in plan.faults.iter().enumerate() {
                    assert!(a.at >= WINDOW / 10 && a.at < WINDOW * 7 / 10, "{plan}");
                    for b in &plan.faults[i + 1..] {
                        assert_ne!(a.fault.hit(), b.fault.hit(), "{plan}");
                    }
                }
            }
        }
    }

    #[test]
    fn fifty_rounds_cover_every_kind_of_fault() {
        let kinds: BTreeSet<&str> = (0..50)
            .flat_map(|r| plan_round(1, r, WINDOW).faults)
            .map(|s| s.fault.kind())
            .collect();
        let all = [
            "kill_replicator",
            "kill_worker",
            "pause_replicator",
            "pause_worker",
            "kill_nats",
            "pause_nats",
            "crash_target",
            "pause_target",
            "crash_source",
            "restart_source",
            "cut_link",
            "cut_link_mid_message",
            "freeze_link",
            "delay_link",
        ];
        for kind in all {
            assert!(kinds.contains(kind), "{kind} never planned in 50 rounds");
        }
    }

    #[test]
    fn every_lasting_fault_heals_after_it_starts() {
        let proc = Proc::Worker(Pipe::File);
        let d = Duration::from_millis;
        let cases: [(Fault, &[(u64, Action)]); 6] = [
            (
                Fault::Kill { proc, down: d(500) },
                &[(100, Action::Kill(proc)), (600, Action::Release(proc))],
            ),
            (
                Fault::Pause { proc, held: d(50) },
                &[(100, Action::Stop(proc)), (150, Action::Cont(proc))],
            ),
            (
                Fault::KillNats { down: d(0) },
                &[(100, Action::KillNats), (100, Action::StartNats)],
            ),
            (
                Fault::CrashTarget { down: d(10) },
                &[(100, Action::CrashTarget), (110, Action::StartTarget)],
            ),
            (
                Fault::Freeze {
                    link: Link::Target,
                    held: d(1),
                },
                &[
                    (100, Action::Freeze(Link::Target)),
                    (101, Action::Thaw(Link::Target)),
                ],
            ),
            (
                Fault::Delay {
                    link: Link::Consume,
                    by: d(20),
                    held: d(900),
                },
                &[
                    (100, Action::Delay(Link::Consume, d(20))),
                    (1000, Action::Delay(Link::Consume, Duration::ZERO)),
                ],
            ),
        ];
        for (fault, want) in cases {
            let plan = RoundPlan {
                seed: 0,
                round: 0,
                window: WINDOW,
                faults: vec![Scheduled { at: d(100), fault }],
                workload_seed: 0,
            };
            let got: Vec<(u64, Action)> = timeline(&plan)
                .into_iter()
                .map(|(at, a)| (u64::try_from(at.as_millis()).unwrap(), a))
                .collect();
            assert_eq!(got, want, "{fault}");
        }
    }

    #[test]
    fn the_timeline_interleaves_faults_in_time_order() {
        let d = Duration::from_millis;
        let plan = RoundPlan {
            seed: 0,
            round: 0,
            window: WINDOW,
            faults: vec![
                Scheduled {
                    at: d(100),
                    fault: Fault::PauseNats { held: d(1000) },
                },
                Scheduled {
                    at: d(400),
                    fault: Fault::Cut(Link::Source),
                },
            ],
            workload_seed: 0,
        };
        let got: Vec<Action> = timeline(&plan).into_iter().map(|(_, a)| a).collect();
        assert_eq!(
            got,
            [
                Action::StopNats,
                Action::Cut(Link::Source),
                Action::ContNats
            ]
        );
    }

    #[test]
    fn the_printed_plan_says_how_to_replay_it() {
        let plan = plan_round(42, 7, WINDOW);
        let text = plan.to_string();
        assert!(
            text.starts_with("round 7 (seed 42, replay: scripts/chaos.sh 1 42 7):"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1 + plan.faults.len(), "{text}");
    }
}
