//! What a comparison found: the JSON document and the table for people.

use std::fmt;

use serde::Serialize;

use super::process::Machine;
use crate::report::Report;

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The machine it ran on.
    pub machine: Machine,
    /// How it was run.
    pub settings: Settings,
    /// Plaintext on both legs (`None` when not run).
    pub plaintext: Option<TransportResult>,
    /// TLS on both legs, client certificates on both (`None` when not run).
    pub tls: Option<TransportResult>,
    /// Length of the whole comparison, in seconds.
    pub elapsed_s: f64,
}

/// The settings of a comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Settings {
    /// Length of each search step, in milliseconds.
    pub step_ms: u64,
    /// Attempts at a rate before it counts as failed (any pass passes it).
    pub step_attempts: u32,
    /// Length of each fixed-rate run, in milliseconds.
    pub fixed_ms: u64,
    /// Fixed-rate runs per system, the systems taking turns.
    pub fixed_rounds: u32,
    /// How long a step waits for its last answers, in milliseconds.
    pub drain_ms: u64,
    /// First rate of each search.
    pub start_rate: u64,
    /// Lowest rate a search tries.
    pub min_rate: u64,
    /// Highest rate a search tries.
    pub max_rate: u64,
    /// Most steps per search.
    pub max_steps: u32,
    /// Bisection stops within this fraction.
    pub tolerance: f64,
    /// A step passes when p99 is under this (and every request is answered).
    pub p99_limit_us: u64,
    /// Load generator connections (each system keeps as many to the bank).
    pub connections: u64,
    /// Whether processes were pinned to cores.
    pub pinned: bool,
    /// Core of the system under test (switch or HAProxy).
    pub system_core: Option<usize>,
    /// Core of the load generator and the bank simulator.
    pub load_core: Option<usize>,
    /// The switch's journal (`off` or its fsync mode).
    pub switch_journal: String,
    /// The bank both systems reach.
    pub bank: String,
    /// The rate of the fixed-rate runs.
    pub fixed_rate_basis: String,
    /// Soft bound on the whole comparison, in seconds.
    pub budget_s: u64,
    /// The MAC run (`--mac`): `off`, `hmac` or `cmac`.
    pub mac: String,
    /// What the MAC run MACs and with which HSM (`None` when `off`).
    pub mac_setup: Option<String>,
    /// `--busy-poll`: the switch and HAProxy busy-polled, and each was
    /// measured with the others stopped.
    #[serde(default)]
    pub busy_poll: bool,
}

/// One transport (plaintext or TLS): both systems.
#[derive(Debug, Clone, Serialize)]
pub struct TransportResult {
    /// The switch's maximum sustainable rate.
    pub switch_tps: u64,
    /// HAProxy's maximum sustainable rate.
    pub relay_tps: u64,
    /// `switch_tps / relay_tps` (`None` when the relay sustained nothing).
    pub ratio: Option<f64>,
    /// The switch's p99 at `fixed_rate_tps` (its median run's).
    pub switch_p99_us: Option<u64>,
    /// HAProxy's p99 at `fixed_rate_tps` (its median run's).
    pub relay_p99_us: Option<u64>,
    /// The switch's CPU per transaction at `fixed_rate_tps` (µs, median
    /// over its runs).
    pub switch_cpu_us_per_txn: Option<f64>,
    /// HAProxy's CPU per transaction at `fixed_rate_tps` (µs, median over
    /// its runs).
    pub relay_cpu_us_per_txn: Option<f64>,
    /// Rate of the fixed-rate runs: half the lower of the two maxima.
    pub fixed_rate_tps: u64,
    /// p99 at `fixed_rate_tps` with the load generator straight to the
    /// bank: the floor that the generator and the simulator add by
    /// themselves (a p99 near it says little about the system).
    pub direct_p99_us: u64,
    /// The switch's maximum sustainable rate with a MAC on every bank
    /// message (`--mac`; `None` when off).
    pub switch_mac_tps: Option<u64>,
    /// `switch_mac_tps / switch_tps`, both from this run (issue 6's target:
    /// >= 0.6; `None` when `--mac off` or the switch sustained nothing).
    pub mac_ratio: Option<f64>,
    /// The switch's p99 with the MAC at `fixed_rate_tps`.
    pub switch_mac_p99_us: Option<u64>,
    /// MACs refused during the MAC run, on either side (0 when all is well).
    pub mac_auth_failures: Option<MacAuthFailures>,
    /// The load generator's own maximum against the simulated bank alone on
    /// the system core (`None` with `--no-generator-ceiling`).
    pub generator_tps: Option<u64>,
    /// `generator_tps / switch_tps` (issue 6's target: >= 2; `None` when
    /// not measured or the switch sustained nothing).
    pub generator_ratio: Option<f64>,
    /// The fixed-rate run straight to the bank.
    pub direct: Report,
    /// The switch's search and fixed-rate run.
    pub switch: SystemResult,
    /// HAProxy's search and fixed-rate run.
    pub relay: SystemResult,
    /// The switch's search and fixed-rate run with the MAC.
    pub switch_mac: Option<SystemResult>,
    /// The search of the generator's ceiling (no fixed-rate run).
    pub generator: Option<SystemResult>,
}

/// MACs refused during a MAC run (each `None` when it could not be read).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct MacAuthFailures {
    /// Requests whose MAC the simulated bank refused (answered 63): its
    /// ledger's `auth_failures`.
    pub bank: Option<u64>,
    /// Answers whose MAC the switch refused:
    /// `fps_switch_bank_auth_failures_total`.
    pub switch: Option<u64>,
}

impl MacAuthFailures {
    /// Whether either side counted a refused MAC.
    pub fn any(&self) -> bool {
        self.bank.unwrap_or(0) + self.switch.unwrap_or(0) > 0
    }
}

/// One system's search and fixed-rate run.
#[derive(Debug, Clone, Serialize)]
pub struct SystemResult {
    /// Highest rate that passed (0 when none did).
    pub max_tps: u64,
    /// Lowest rate that failed, if any.
    pub lowest_failed_tps: Option<u64>,
    /// Whether the search converged (not cut short by steps or time).
    pub converged: bool,
    /// Which core ran out at the lowest failing rate: `system` (the system
    /// under test used >= 85 % of its core), `generator` (the load
    /// generator and simulator used >= 90 % of theirs: the maximum is a
    /// lower bound of the system's), or `neither` (p99 went over the limit
    /// before either core was full).
    pub limited_by: Option<String>,
    /// Every step of the search, in order.
    pub steps: Vec<Step>,
    /// The median fixed-rate run (by p99) of `fixed_runs`.
    pub fixed: Option<Report>,
    /// Every fixed-rate run, in the order they ran.
    pub fixed_runs: Vec<FixedRun>,
}

/// One fixed-rate run, in short.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct FixedRun {
    /// p50 latency (µs).
    pub p50_us: u64,
    /// p99 latency (µs).
    pub p99_us: u64,
    /// Answers per second.
    pub achieved_tps: f64,
    /// Every request answered once, correctly.
    pub clean: bool,
    /// Cores' worth of CPU the system under test used.
    pub system_cpu: Option<f64>,
    /// The system's CPU time per answered request (µs): at one rate for
    /// both systems, what each costs per transaction, whatever the load
    /// generator's own ceiling.
    pub cpu_us_per_txn: Option<f64>,
}

impl FixedRun {
    /// The summary of one run.
    pub fn of(report: &Report, step: &Step) -> Self {
        let cpu_us_per_txn = step
            .system_cpu
            .filter(|_| report.achieved_tps > 0.0)
            .map(|cores| round1(cores * 1e6 / report.achieved_tps));
        FixedRun {
            p50_us: report.p50_us,
            p99_us: report.p99_us,
            achieved_tps: report.achieved_tps,
            clean: report.clean(),
            system_cpu: step.system_cpu,
            cpu_us_per_txn,
        }
    }
}

/// The run with the median p99 (the upper one of an even count, the
/// pessimistic pick) and every run's summary in the order they ran. A run
/// that was not clean (a request unanswered or wrongly answered, or the
/// run itself failed, which leaves its p99 at 0) ranks as the worst, so
/// that it is never the one reported as typical by accident.
pub fn median_run(runs: Vec<(Report, FixedRun)>) -> (Option<Report>, Vec<FixedRun>) {
    let summaries: Vec<FixedRun> = runs.iter().map(|(_, run)| *run).collect();
    let mut runs = runs;
    runs.sort_by_key(|(report, run)| (!run.clean, report.p99_us));
    (upper_median(runs).map(|(r, _)| r), summaries)
}

/// The median (upper, for an even count) CPU per transaction over `runs`.
pub fn median_cpu_us_per_txn(runs: &[FixedRun]) -> Option<f64> {
    let mut cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_us_per_txn).collect();
    cpu.sort_by(f64::total_cmp);
    upper_median(cpu)
}

/// The middle element of `sorted` (best first); of an even count the
/// upper of the middle two, the worse: the pessimistic pick.
fn upper_median<T>(sorted: Vec<T>) -> Option<T> {
    let middle = sorted.len() / 2;
    sorted.into_iter().nth(middle)
}

/// One step of a search.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    /// Offered rate.
    pub rate_tps: u64,
    /// Whether the rate was sustained.
    pub passed: bool,
    /// Why not, when it was not.
    pub why: Option<String>,
    /// p99 latency (µs).
    pub p99_us: u64,
    /// Requests offered.
    pub offered: u64,
    /// Requests correctly answered.
    pub answered: u64,
    /// Answers per second.
    pub achieved_tps: f64,
    /// Cores' worth of CPU the system under test used (1.0 = its core full).
    pub system_cpu: Option<f64>,
    /// Cores' worth of CPU the load generator and simulator used.
    pub generator_cpu: Option<f64>,
}

/// Which core limited a system, from its lowest failing step.
pub fn limited_by(step: &Step) -> Option<&'static str> {
    let system = step.system_cpu?;
    let generator = step.generator_cpu?;
    Some(if system >= 0.85 {
        "system"
    } else if generator >= 0.9 {
        "generator"
    } else {
        "neither"
    })
}

/// Round to three decimals (ratios and CPU shares are not more precise).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Round to one decimal (microseconds of CPU per transaction).
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `numerator / denominator` to three decimals; `None` when the
/// denominator sustained nothing.
pub fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| round3(numerator as f64 / denominator as f64))
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), thousands)
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "relay baseline: fps-switch vs HAProxy {} (TCP mode), same load, same bank simulator",
            self.machine.haproxy_version
        )?;
        let pinning = match (s.system_core, s.load_core) {
            (Some(a), Some(b)) => {
                format!(
                    "system under test on core {a}, load generator and bank simulator on core {b}"
                )
            }
            _ => "not pinned".to_owned(),
        };
        writeln!(
            f,
            "{} ({} cores), {pinning}; max = highest open-loop rate with p99 < {} µs and every request answered ({} ms steps, a rate passes when one of {} attempts does); switch journal: {}",
            self.machine.cpu_model, self.machine.cores, s.p99_limit_us, s.step_ms, s.step_attempts, s.switch_journal
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10} {:>10} {:>10} {:>7}   {:>10} {:>10} {:>10} {:>10}",
            "", "switch", "relay", "", "fixed", "switch", "relay", "direct"
        )?;
        writeln!(
            f,
            "{:<10} {:>10} {:>10} {:>7}   {:>10} {:>10} {:>10} {:>10}",
            "transport", "max TPS", "max TPS", "ratio", "rate TPS", "p99 µs", "p99 µs", "p99 µs"
        )?;
        let mut notes = Vec::new();
        for (name, r) in [("plaintext", &self.plaintext), ("tls", &self.tls)] {
            let Some(r) = r else { continue };
            writeln!(
                f,
                "{:<10} {:>10} {:>10} {:>7}   {:>10} {:>10} {:>10} {:>10}",
                name,
                thousands(r.switch_tps),
                thousands(r.relay_tps),
                r.ratio
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x")),
                thousands(r.fixed_rate_tps),
                opt(r.switch_p99_us),
                opt(r.relay_p99_us),
                thousands(r.direct_p99_us)
            )?;
            let systems = [
                Some(("switch", &r.switch)),
                Some(("relay", &r.relay)),
                r.switch_mac.as_ref().map(|m| ("switch+mac", m)),
                r.generator.as_ref().map(|g| ("generator", g)),
            ];
            for (system, res) in systems.into_iter().flatten() {
                if system == "generator" {
                    if res.limited_by.as_deref() == Some("system") {
                        notes.push(format!(
                            "{name} generator: the simulated bank's core was full at {} TPS: the generator's ceiling is a lower bound",
                            opt(res.lowest_failed_tps)
                        ));
                    }
                } else if res.limited_by.as_deref() == Some("generator") {
                    notes.push(format!(
                        "{name} {system}: the load generator's core was full at {} TPS: its max is a lower bound",
                        opt(res.lowest_failed_tps)
                    ));
                }
                if !res.converged {
                    notes.push(format!(
                        "{name} {system}: search cut short (steps or time budget)"
                    ));
                }
                let unclean = res.fixed_runs.iter().filter(|r| !r.clean).count();
                if unclean > 0 {
                    notes.push(format!(
                        "{name} {system}: {unclean} of {} fixed-rate runs not clean (see the JSON)",
                        res.fixed_runs.len()
                    ));
                }
            }
        }
        self.fmt_rounds(f)?;
        self.fmt_generator(f)?;
        if s.mac != "off" {
            self.fmt_mac(f, &mut notes)?;
        }
        for n in &notes {
            writeln!(f, "note: {n}")?;
        }
        write!(
            f,
            "ratio = switch / relay max TPS; fixed rate = {}; switch and relay p99 = the median of {} run(s) each; direct = load generator straight to the bank (the floor); {:.0} s in all",
            s.fixed_rate_basis, s.fixed_rounds, self.elapsed_s
        )
    }
}

impl Comparison {
    /// Every fixed-rate run's p99 and the CPU each system spent per
    /// transaction at that rate, one line per transport measured.
    fn fmt_rounds(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, r) in [("plaintext", &self.plaintext), ("tls", &self.tls)] {
            let Some(r) = r else { continue };
            let runs = |res: &SystemResult| {
                let p99: Vec<String> = res.fixed_runs.iter().map(|x| thousands(x.p99_us)).collect();
                p99.join(" / ")
            };
            let cpu = |us: Option<f64>| us.map_or_else(|| "?".to_owned(), |us| format!("{us:.1}"));
            writeln!(
                f,
                "{name} at {} TPS: switch p99 {} µs, CPU {} µs per transaction; relay p99 {} µs, CPU {} µs per transaction",
                thousands(r.fixed_rate_tps),
                runs(&r.switch),
                cpu(r.switch_cpu_us_per_txn),
                runs(&r.relay),
                cpu(r.relay_cpu_us_per_txn)
            )?;
        }
        Ok(())
    }

    /// The generator's ceiling, one line per transport measured.
    fn fmt_generator(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, r) in [("plaintext", &self.plaintext), ("tls", &self.tls)] {
            let Some(r) = r else { continue };
            let Some(tps) = r.generator_tps else { continue };
            writeln!(
                f,
                "{name}: load generator ceiling (straight to the simulated bank alone on the system core) {} TPS = {} the switch's max (target >= {GENERATOR_RATIO_TARGET}x)",
                thousands(tps),
                r.generator_ratio
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x"))
            )?;
        }
        Ok(())
    }

    /// The MAC table: the switch with and without the MAC, same run.
    fn fmt_mac(&self, f: &mut fmt::Formatter<'_>, notes: &mut Vec<String>) -> fmt::Result {
        writeln!(f)?;
        writeln!(
            f,
            "with a MAC on every bank 003 message (--mac {}), both directions: the switch through SoftHSM2, the simulated bank in software; target mac ratio >= {MAC_RATIO_TARGET}",
            self.settings.mac
        )?;
        writeln!(
            f,
            "{:<10} {:>10} {:>10} {:>7}   {:>10} {:>10} {:>10}",
            "", "switch", "+mac", "mac", "fixed", "switch", "+mac"
        )?;
        writeln!(
            f,
            "{:<10} {:>10} {:>10} {:>7}   {:>10} {:>10} {:>10}",
            "transport", "max TPS", "max TPS", "ratio", "rate TPS", "p99 µs", "p99 µs"
        )?;
        for (name, r) in [("plaintext", &self.plaintext), ("tls", &self.tls)] {
            let Some(r) = r else { continue };
            writeln!(
                f,
                "{:<10} {:>10} {:>10} {:>7}   {:>10} {:>10} {:>10}",
                name,
                thousands(r.switch_tps),
                opt(r.switch_mac_tps),
                r.mac_ratio
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x")),
                thousands(r.fixed_rate_tps),
                opt(r.switch_p99_us),
                opt(r.switch_mac_p99_us)
            )?;
            if r.switch_mac_tps.is_some_and(|m| m < r.fixed_rate_tps) {
                notes.push(format!(
                    "{name} switch+mac: the fixed rate is above its max: its p99 there is that of an overloaded switch"
                ));
            }
            match &r.mac_auth_failures {
                Some(a) if a.any() => notes.push(format!(
                    "{name} switch+mac: MACs refused: {} request(s) by the bank, {} answer(s) by the switch",
                    opt(a.bank),
                    opt(a.switch)
                )),
                Some(a) if a.bank.is_none() || a.switch.is_none() => notes.push(format!(
                    "{name} switch+mac: the MAC failure counts could not all be read (bank {}, switch {})",
                    opt(a.bank),
                    opt(a.switch)
                )),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Issue 6's target for the switch with a MAC: this share of its rate without.
pub const MAC_RATIO_TARGET: f64 = 0.6;
/// Issue 6's target for the load generator: this multiple of the switch's
/// maximum, against a trivial peer.
pub const GENERATOR_RATIO_TARGET: f64 = 2.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_and_limits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        let mut s = Step {
            rate_tps: 1,
            passed: false,
            why: None,
            p99_us: 0,
            offered: 0,
            answered: 0,
            achieved_tps: 0.0,
            system_cpu: Some(0.97),
            generator_cpu: Some(0.99),
        };
        assert_eq!(limited_by(&s), Some("system"));
        s.system_cpu = Some(0.4);
        assert_eq!(limited_by(&s), Some("generator"));
        s.generator_cpu = Some(0.5);
        assert_eq!(limited_by(&s), Some("neither"));
        s.generator_cpu = None;
        assert_eq!(limited_by(&s), None);
        assert_eq!(round3(0.123_456), 0.123);
    }

    /// A clean report of one answer per second with this p99.
    fn report(p99_us: u64) -> Report {
        let mut rec = crate::report::Recorder::new();
        rec.answer(std::time::Duration::from_micros(p99_us), "00", "003");
        let mut r = rec.report(1, 1.0, std::time::Duration::from_secs(1));
        r.p99_us = p99_us;
        r
    }

    /// A step of `rate` with the system using `system_cpu` cores.
    fn step(rate: u64, system_cpu: Option<f64>) -> Step {
        Step {
            rate_tps: rate,
            passed: true,
            why: None,
            p99_us: 0,
            offered: rate,
            answered: rate,
            achieved_tps: rate as f64,
            system_cpu,
            generator_cpu: Some(0.5),
        }
    }

    fn system(max_tps: u64, p99_us: u64) -> SystemResult {
        let fixed = report(p99_us);
        SystemResult {
            max_tps,
            lowest_failed_tps: None,
            converged: true,
            limited_by: None,
            steps: Vec::new(),
            fixed_runs: vec![FixedRun::of(&fixed, &step(1, Some(0.25)))],
            fixed: Some(fixed),
        }
    }

    #[test]
    fn the_fixed_rate_runs_report_their_median_and_cpu_per_transaction() {
        let run = |p99_us: u64, cpu: Option<f64>| {
            let mut r = report(p99_us);
            r.achieved_tps = 16_000.0;
            let summary = FixedRun::of(&r, &step(16_000, cpu));
            (r, summary)
        };
        // 0.5 of a core at 16,000 answers per second: 31.25 us each.
        let (first, summary) = run(2_000, Some(0.5));
        assert_eq!(summary.cpu_us_per_txn, Some(31.3));
        assert_eq!(summary.p99_us, 2_000);
        assert!(summary.clean);
        let (fixed, runs) = median_run(vec![
            (first, summary),
            run(9_000, Some(0.52)),
            run(1_500, Some(0.48)),
        ]);
        // The median p99, not the first or the best run; the summaries in
        // the order they ran.
        assert_eq!(fixed.map(|r| r.p99_us), Some(2_000));
        assert_eq!(
            runs.iter().map(|r| r.p99_us).collect::<Vec<_>>(),
            [2_000, 9_000, 1_500]
        );
        assert_eq!(median_cpu_us_per_txn(&runs), Some(31.3));
        // An even count takes the worse of the middle two.
        let (fixed, runs) = median_run(vec![run(1_000, Some(0.4)), run(3_000, None)]);
        assert_eq!(fixed.map(|r| r.p99_us), Some(3_000));
        // A run without a CPU reading is left out of the CPU median.
        assert_eq!(median_cpu_us_per_txn(&runs), Some(25.0));
        assert_eq!(median_run(Vec::new()), (None, Vec::new()));
        assert_eq!(median_cpu_us_per_txn(&[]), None);
        // A run that failed outright (p99 0, nothing answered) ranks as the
        // worst, not the best: the median of these three is 3,000 us.
        let mut failed = report(0);
        failed.answered = 0;
        let failed_run = FixedRun::of(&failed, &step(16_000, None));
        assert!(!failed_run.clean);
        let (fixed, _) = median_run(vec![
            (failed, failed_run),
            run(3_000, Some(0.5)),
            run(2_000, Some(0.5)),
        ]);
        assert_eq!(fixed.map(|r| r.p99_us), Some(3_000));
    }

    #[test]
    fn every_fixed_rate_run_is_listed_with_the_cpu_per_transaction() {
        let mut c = comparison(false);
        if let Some(r) = c.plaintext.as_mut() {
            let p99s = [1_800, 2_400, 5_100];
            r.switch.fixed_runs = p99s
                .iter()
                .map(|&p| FixedRun::of(&report(p), &step(1, Some(0.3))))
                .collect();
            (r.switch_cpu_us_per_txn, r.relay_cpu_us_per_txn) = (Some(31.2), Some(10.4));
        }
        let table = c.to_string();
        assert!(
            table.contains(
                "plaintext at 7,000 TPS: switch p99 1,800 / 2,400 / 5,100 µs, CPU 31.2 µs per transaction; relay p99 700 µs, CPU 10.4 µs per transaction"
            ),
            "{table}"
        );
        assert!(table.contains("the median of 3 run(s) each"), "{table}");
        assert!(!table.contains("not clean"), "{table}");
        // One run of three that lost a request is named, whichever run is
        // the median.
        if let Some(r) = c.plaintext.as_mut() {
            r.switch.fixed_runs[2].clean = false;
        }
        let table = c.to_string();
        assert!(
            table.contains("plaintext switch: 1 of 3 fixed-rate runs not clean"),
            "{table}"
        );
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["plaintext"]["switch_cpu_us_per_txn"], 31.2);
        assert_eq!(j["plaintext"]["switch"]["fixed_runs"][2]["p99_us"], 5_100);
        assert_eq!(j["settings"]["fixed_rounds"], 3);
    }

    fn comparison(mac: bool) -> Comparison {
        let (switch, relay, switch_mac) = (
            system(14_000, 900),
            system(60_000, 700),
            system(9_100, 1_500),
        );
        let direct = relay.fixed.clone().unwrap();
        let r = TransportResult {
            switch_tps: switch.max_tps,
            relay_tps: relay.max_tps,
            ratio: ratio(switch.max_tps, relay.max_tps),
            switch_p99_us: Some(900),
            relay_p99_us: Some(700),
            switch_cpu_us_per_txn: None,
            relay_cpu_us_per_txn: None,
            fixed_rate_tps: 7_000,
            direct_p99_us: 600,
            switch_mac_tps: mac.then_some(switch_mac.max_tps),
            mac_ratio: if mac {
                ratio(switch_mac.max_tps, switch.max_tps)
            } else {
                None
            },
            switch_mac_p99_us: mac.then_some(1_500),
            mac_auth_failures: mac.then_some(MacAuthFailures {
                bank: Some(0),
                switch: Some(0),
            }),
            generator_tps: Some(40_000),
            generator_ratio: ratio(40_000, switch.max_tps),
            direct,
            switch,
            relay,
            switch_mac: mac.then_some(switch_mac),
            generator: Some(system(40_000, 0)),
        };
        Comparison {
            machine: Machine {
                cores: 2,
                cpu_model: "test".into(),
                kernel: "6".into(),
                haproxy_version: "2.6".into(),
            },
            settings: Settings {
                step_ms: 1000,
                step_attempts: 2,
                fixed_ms: 5000,
                fixed_rounds: 3,
                drain_ms: 1000,
                start_rate: 2000,
                min_rate: 100,
                max_rate: 1_000_000,
                max_steps: 12,
                tolerance: 0.1,
                p99_limit_us: 10_000,
                connections: 4,
                pinned: true,
                system_core: Some(0),
                load_core: Some(1),
                switch_journal: "never".into(),
                bank: "bank003".into(),
                fixed_rate_basis: "half".into(),
                budget_s: 360,
                mac: if mac { "hmac" } else { "off" }.into(),
                mac_setup: mac.then(|| "mac-hmac".into()),
                busy_poll: false,
            },
            plaintext: Some(r),
            tls: None,
            elapsed_s: 1.0,
        }
    }

    #[test]
    fn mac_ratio_is_the_mac_switch_over_the_switch() {
        assert_eq!(ratio(9_100, 14_000), Some(0.65));
        assert_eq!(ratio(2, 3), Some(0.667));
        assert_eq!(ratio(5, 0), None);
        let c = comparison(true);
        let j = serde_json::to_value(&c).unwrap();
        let p = &j["plaintext"];
        // The existing contract, unchanged.
        assert_eq!(p["switch_tps"], 14_000);
        assert_eq!(p["relay_tps"], 60_000);
        assert_eq!(p["ratio"], 0.233);
        assert_eq!(p["switch_p99_us"], 900);
        assert_eq!(p["relay_p99_us"], 700);
        // The MAC run.
        assert_eq!(p["switch_mac_tps"], 9_100);
        assert_eq!(p["mac_ratio"], 0.65);
        assert_eq!(p["switch_mac_p99_us"], 1_500);
        assert_eq!(p["mac_auth_failures"]["bank"], 0);
        assert_eq!(p["mac_auth_failures"]["switch"], 0);
        assert_eq!(p["switch_mac"]["max_tps"], 9_100);
        assert_eq!(j["settings"]["mac"], "hmac");
        assert_eq!(j["settings"]["mac_setup"], "mac-hmac");
        let table = c.to_string();
        assert!(table.contains("target mac ratio >= 0.6"), "{table}");
        assert!(table.contains("0.65x"), "{table}");
        assert!(!table.contains("MACs refused"), "{table}");
    }

    #[test]
    fn the_generator_ceiling_is_reported_against_the_switch() {
        let mut c = comparison(false);
        let j = serde_json::to_value(&c).unwrap();
        let p = &j["plaintext"];
        assert_eq!(p["generator_tps"], 40_000);
        assert_eq!(p["generator_ratio"], 2.857);
        assert_eq!(p["generator"]["max_tps"], 40_000);
        let table = c.to_string();
        assert!(
            table.contains("load generator ceiling") && table.contains("40,000 TPS = 2.86x"),
            "{table}"
        );
        assert!(table.contains("target >= 2x"), "{table}");
        assert!(!table.contains("ceiling is a lower bound"), "{table}");
        // The peer's core ran out first: the ceiling is only a lower bound.
        if let Some(g) = c.plaintext.as_mut().and_then(|r| r.generator.as_mut()) {
            g.limited_by = Some("system".into());
            g.lowest_failed_tps = Some(44_000);
        }
        let table = c.to_string();
        assert!(
            table.contains("simulated bank's core was full at 44,000 TPS"),
            "{table}"
        );
        // Not measured (--no-generator-ceiling): no line, null fields.
        if let Some(r) = c.plaintext.as_mut() {
            (r.generator_tps, r.generator_ratio, r.generator) = (None, None, None);
        }
        assert!(!c.to_string().contains("ceiling"));
        let j = serde_json::to_value(&c).unwrap();
        assert!(j["plaintext"]["generator_tps"].is_null());
    }

    #[test]
    fn without_mac_the_new_fields_are_null() {
        let c = comparison(false);
        let j = serde_json::to_value(&c).unwrap();
        let p = &j["plaintext"];
        for field in [
            "switch_mac_tps",
            "mac_ratio",
            "switch_mac_p99_us",
            "mac_auth_failures",
            "switch_mac",
        ] {
            assert!(p[field].is_null(), "{field}: {}", p[field]);
        }
        assert_eq!(p["ratio"], 0.233);
        assert_eq!(j["settings"]["mac"], "off");
        assert!(j["settings"]["mac_setup"].is_null());
        assert!(!c.to_string().contains("mac ratio"));
    }

    #[test]
    fn refused_macs_are_noted() {
        let mut c = comparison(true);
        if let Some(r) = &mut c.plaintext {
            r.mac_auth_failures = Some(MacAuthFailures {
                bank: Some(3),
                switch: Some(0),
            });
        }
        let table = c.to_string();
        assert!(
            table.contains("MACs refused: 3 request(s) by the bank, 0 answer(s) by the switch"),
            "{table}"
        );
        assert!(!table.contains("overloaded"), "{table}");
        if let Some(r) = &mut c.plaintext {
            r.switch_mac_tps = Some(5_000);
        }
        assert!(c
            .to_string()
            .contains("switch+mac: the fixed rate is above its max"));
    }
}
