//! `aurora-bench`: Aurora against a direct connection and nginx, side by side, and the control
//! plane's propagation speed, in one run on one machine. A binary, not a test: `scripts/bench`
//! builds it in release mode with the `aurora` binary and runs it; `--smoke` runs every
//! scenario at a tiny scale in a few seconds, for CI.
//!
//! Code map: [`upstream`] is the fake provider; [`load`] sends requests (fixed rate,
//! saturation with wrk and oha, SSE); [`nginx`] and [`aurora`] start the gateways; [`gateway`]
//! runs the side-by-side comparison; [`cpu`] reads a gateway's CPU time per request from
//! `/proc`; [`features`] what each request-path feature costs;
//! [`instructions`] reads the callgrind counts of `scripts/bench-instructions`;
//! [`control_plane`] measures revocation, fan-out and resume; [`snapshot`] the million-key
//! snapshot; [`report`] writes the markdown, every per-round figure as a [`spread::Spread`];
//! [`rotation`] orders each round's subjects.

mod aurora;
mod control_plane;
mod cpu;
mod cross_replica;
mod durability;
mod features;
mod gateway;
mod instructions;
mod limits_accuracy;
mod load;
mod machine;
mod nginx;
mod procs;
mod report;
mod rotation;
mod snapshot;
mod spread;
mod upstream;
mod usage_ingest;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::load::{Auth, Target, sse};
use crate::report::Report;

#[derive(Parser, Debug)]
#[command(name = "aurora-bench", about = "Benchmarks Aurora against a direct connection and nginx")]
struct Args {
    /// Every scenario at a tiny scale (a few seconds): proves the harness works, measures little.
    #[arg(long)]
    smoke: bool,
    /// Write the markdown report here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `aurora` binary [default: next to this executable].
    #[arg(long, env = "AURORA_BIN")]
    aurora_bin: Option<PathBuf>,
    /// Instead of the benchmark: drive Aurora (then nginx) at saturation with wrk for this many
    /// seconds each, printing each gateway's process id first, so a profiler can attach
    /// (`perf record -g -p PID`). Writes no report.
    #[arg(long, value_name = "SECONDS")]
    profile: Option<u64>,
    /// The PostgreSQL server the cross-replica figure creates its database on (and drops it).
    #[arg(
        long,
        env = "AURORA_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    postgres_url: String,
    /// The output of `scripts/bench-instructions` (instructions per request), for the report.
    #[arg(long, value_name = "FILE")]
    instructions: Option<PathBuf>,
    /// oha, the second saturation load generator [default: `oha` on the PATH or in
    /// ~/.cargo/bin]. A full run fails without it; a smoke run skips its rows and says so.
    #[arg(long, env = "AURORA_BENCH_OHA")]
    oha: Option<PathBuf>,
    /// The command line shown in the report as the one that regenerates it.
    #[arg(long, default_value = "scripts/bench")]
    command: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err.into()),
    };
    // The upstream gets a runtime of its own, so the load generator's tasks never delay it.
    let upstream_runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err.into()),
    };
    match runtime.block_on(run(args, upstream_runtime.handle().clone())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

#[allow(clippy::print_stderr)] // The binary's edge: one line per failure.
fn fail(err: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("aurora-bench: error: {err:#}");
    std::process::ExitCode::FAILURE
}

#[allow(clippy::print_stderr)] // Progress goes to stderr so stdout stays the report.
pub(crate) fn progress(message: &str) {
    eprintln!("aurora-bench: {message}");
}

/// Every scale in one place: the full run and the smoke run.
struct Scales {
    gateway: gateway::Scale,
    features: features::Scale,
    control_plane: control_plane::Scale,
    snapshot: snapshot::Scale,
    durability: durability::Scale,
}

fn scales(smoke: bool) -> Scales {
    if smoke {
        return Scales {
            gateway: gateway::Scale {
                rates: vec![200],
                rounds: 1,
                fixed_duration: Duration::from_secs(1),
                warmup: Duration::from_millis(200),
                connections: 8,
                saturation_duration: Duration::from_secs(1),
                saturation_connections: 8,
                sse: sse::Plan { streams: 3, events: 5, gap: Duration::from_millis(2) },
            },
            features: features::Scale {
                rounds: 1,
                rate: 200,
                connections: 8,
                duration: Duration::from_secs(1),
                contention: features::ContentionScale { rounds: 1, requests: 1_000 },
            },
            control_plane: control_plane::Scale {
                replicas: 3,
                revocations: 2,
                probe_period: Duration::from_millis(2),
                subscribers: 20,
                fanout_trials: 2,
                offline_commits: 2,
            },
            snapshot: snapshot::Scale { keys: 19_999, rate: 200, window: Duration::from_secs(1) },
            durability: durability::Scale { single: 20, burst: 200 },
        };
    }
    Scales {
        gateway: gateway::Scale {
            rates: vec![1_000, 5_000],
            rounds: 3,
            // 10,000 requests a round at 1,000/s: 30,000 pooled, 30 past the p99.9.
            fixed_duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            connections: 64,
            saturation_duration: Duration::from_secs(5),
            saturation_connections: 64,
            sse: sse::Plan { streams: 60, events: 20, gap: Duration::from_millis(5) },
        },
        features: features::Scale {
            rounds: 4,
            rate: 1_000,
            connections: 64,
            duration: Duration::from_secs(5),
            contention: features::ContentionScale { rounds: 5, requests: 100_000 },
        },
        control_plane: control_plane::Scale {
            replicas: 20,
            revocations: 20,
            probe_period: Duration::from_millis(2),
            subscribers: 1_000,
            fanout_trials: 20,
            offline_commits: 5,
        },
        snapshot: snapshot::Scale { keys: 999_999, rate: 1_000, window: Duration::from_secs(5) },
        durability: durability::Scale { single: 500, burst: 10_000 },
    }
}

async fn run(args: Args, upstream_runtime: tokio::runtime::Handle) -> anyhow::Result<()> {
    let started = Instant::now();
    let bin = procs::aurora_bin(args.aurora_bin.as_deref())?;
    let scales = scales(args.smoke);
    let scratch = tempfile::tempdir()?;
    let before = machine::Load::now();
    let mut report = Report::default();
    let generators = generators(args.oha.as_deref(), args.smoke)?;
    match generators.oha() {
        Some(load::saturation::Generator::Oha(path)) => report.condition("oha", load::oha::version(path)),
        _ => report.condition("oha", "not installed: its rows are skipped".into()),
    }

    let upstream = upstream_runtime.spawn(upstream::start()).await??;
    progress(&format!("upstream on {}", upstream.addr));

    // The gateways: Aurora (keys from a control plane) and nginx.
    let control_plane = aurora::ControlPlane::start(&bin, &scratch.path().join("cp-main"), upstream.addr, None).await?;
    let mut admin = control_plane.admin().await?;
    let key = admin.create_key("bench-main").await?;
    let limited = admin.create_key_with_every_limit("bench-limited").await?;
    let dataplane = aurora::DataPlane::start(&bin, &control_plane.url(), "bench-main").await?;
    let aurora_target = dataplane.target(&key.secret);
    aurora::wait_until(&aurora_target, true, Duration::from_secs(30))
        .await
        .context("the data plane never accepted the key")?;
    let nginx = nginx::start(&scratch.path().join("nginx"), upstream.addr, &key.secret, upstream::CREDENTIAL).await?;
    let nginx_target = Target {
        name: "nginx",
        addr: nginx.addr,
        path: "/p/anthropic/v1/messages".into(),
        auth: Auth::Gateway(key.secret.clone()),
    };
    let bad = Auth::Gateway("aur_this_token_does_not_exist_0000000000000000".into());
    let targets = gateway::Targets {
        direct: Target {
            name: "direct",
            addr: upstream.addr,
            path: "/v1/messages".into(),
            auth: Auth::Provider(upstream::CREDENTIAL.into()),
        },
        nginx_bad: nginx_target.with_auth(bad.clone()),
        aurora_bad: aurora_target.with_auth(bad),
        nginx: nginx_target,
        aurora: aurora_target,
    };
    let pids = gateway::Pids {
        aurora: dataplane.proc.pid().context("data plane pid")?,
        nginx: nginx.proc.pid().context("nginx pid")?,
    };
    if let Some(seconds) = args.profile {
        let plan = load::saturation::Plan { connections: 64, duration: Duration::from_secs(seconds) };
        for (target, pid) in [(&targets.aurora, pids.aurora), (&targets.nginx, pids.nginx)] {
            progress(&format!("profiling {}: pid {pid}, wrk for {seconds} s", target.name));
            let outcome = load::saturation::run(target, plan, scratch.path()).await?;
            progress(&format!("{}: {:.0} requests/s", target.name, outcome.requests_per_sec));
        }
        return Ok(());
    }
    progress("gateway comparison (direct, nginx, aurora)");
    let setup = gateway::Setup { counters: &upstream.counters, pids, generators };
    gateway::run(&mut report, &targets, &scales.gateway, setup, scratch.path()).await?;
    progress("feature cost");
    let setup = features::Setup {
        bin: &bin,
        control_plane: &control_plane.url(),
        on: &targets.aurora,
        on_pid: pids.aurora,
        token: &key.secret,
        limited_token: &limited.secret,
        upstream: upstream.addr,
        counters: &upstream.counters,
    };
    features::run(&mut report, &setup, scales.features, scratch.path()).await?;
    let instructions = match &args.instructions {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?),
        None => None,
    };
    instructions::section(&mut report, instructions.as_deref());
    drop(nginx);
    drop(dataplane);
    drop(control_plane);

    progress("control plane: revocation, resume, fan-out");
    control_plane::run(&mut report, &bin, scratch.path(), upstream.addr, scales.control_plane).await?;
    progress("durable acknowledgements");
    durability::run(&mut report, scratch.path(), scales.durability).await?;
    progress("usage ingest from 20 data planes");
    usage_ingest::run(&mut report, &bin, scratch.path(), upstream.addr, usage_ingest::Scale::for_run(args.smoke))
        .await?;
    progress("per-key rate limits across 3 data planes (leases, and the naive per-replica baseline)");
    limits_accuracy::run(
        &mut report,
        &bin,
        scratch.path(),
        upstream.addr,
        limits_accuracy::Scale::for_run(args.smoke),
        args.smoke,
    )
    .await?;
    progress("control planes on PostgreSQL: cross-replica revocation");
    cross_replica::run(&mut report, &bin, upstream.addr, &args.postgres_url, scales.control_plane)
        .await
        .context("the cross-replica figure (needs PostgreSQL: --postgres-url)")?;
    progress("million-key snapshot");
    snapshot::run(&mut report, &bin, upstream.addr, scales.snapshot).await?;

    let after = machine::Load::now();
    let text = machine::document(&report, &args.command, args.smoke, &before, &after, started.elapsed());
    write(args.out.as_deref(), &text)?;
    progress(&format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// wrk always; oha when it is installed. A full run needs both: its report would otherwise
/// lack the second generator's figures without anyone having chosen that.
fn generators(explicit: Option<&std::path::Path>, smoke: bool) -> anyhow::Result<gateway::Generators> {
    use load::saturation::Generator;
    match load::oha::locate(explicit) {
        Some(path) => Ok(gateway::Generators { run: vec![Generator::Wrk, Generator::Oha(path)], missing: None }),
        None if smoke => Ok(gateway::Generators {
            run: vec![Generator::Wrk],
            missing: Some(
                "oha is not installed, and a smoke run does not install it; `scripts/bench` does for a full run".into(),
            ),
        }),
        None => anyhow::bail!("oha is not installed (scripts/bench installs it: cargo install oha --locked)"),
    }
}

#[allow(clippy::print_stdout)] // The report is this binary's output.
fn write(out: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
