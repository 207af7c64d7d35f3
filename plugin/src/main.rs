//! `kubectl ferrolb …` (a kubectl plugin: the binary is `kubectl-ferrolb` on
//! the PATH).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kubectl_ferrolb::cluster::{self, Target};
use kubectl_ferrolb::{convert, doctor, status};

/// ferrolb from kubectl: convert MetalLB's configuration, and ask the cluster
/// why a Service is or is not reachable.
#[derive(Parser)]
#[command(name = "kubectl ferrolb", version, about)]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    command: Command,
}

/// The connection flags kubectl has.
#[derive(Args)]
struct TargetArgs {
    /// The kubeconfig file (else KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// The namespace (else the context's).
    #[arg(short = 'n', long, global = true, value_name = "NAME")]
    namespace: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Convert MetalLB's configuration into ferrolb.io objects on stdout: its
    /// legacy configuration (the ConfigMap `metallb-system/config`, under any name,
    /// or the text of its `config` key), Helm values with `configInline`, and
    /// `metallb.io` objects, in one YAML stream — from a file, stdin, or the
    /// cluster. Every field without an equivalent is a warning on stderr and a
    /// comment in the YAML; anything unreadable is an error naming the field,
    /// and the exit code is 1. Nothing is written to the cluster.
    Convert {
        /// The file to read; `-` (the default) reads stdin.
        #[arg(
            short = 'f',
            long = "filename",
            default_value = "-",
            conflicts_with = "from_cluster"
        )]
        file: PathBuf,
        /// Read MetalLB's configuration from the cluster: every ConfigMap with
        /// a legacy `config` key and every metallb.io object in MetalLB's
        /// namespace (`-n`, else metallb-system); BGP passwords are read from
        /// their Secrets.
        #[arg(long)]
        from_cluster: bool,
        /// Send the result to the apiserver with server-side dry run, so the
        /// CRD schema and ferrolb's webhook judge every object (nothing is
        /// stored); the verdicts go to stderr, and the exit code is 1 when
        /// any object is refused.
        #[arg(long)]
        check: bool,
    },
    /// Why a Service is or is not reachable: its IPs and pools, both
    /// conditions, the nodes answering for it (layer 2: active and standby)
    /// or advertising it (BGP: sessions and their state), and recent Events.
    /// Without a Service: a table of every LoadBalancer Service in the
    /// namespace (`-A`: in all namespaces).
    Status {
        /// `svc/NAME`, `service/NAME` or `NAME`.
        service: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Check the cluster for what breaks a bare-metal load balancer, each
    /// finding with its fix: kube-proxy's IPVS mode without strictARP, nodes
    /// excluded from load balancers, another load-balancer controller, Pod
    /// Security on ferrolb-system, the webhook, speakers missing or without
    /// fast failover, pools nothing advertises, Services pending. Exit code 1
    /// when anything is an error. Nothing is written (the webhook is tried
    /// with a dry run).
    Doctor {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn read_input(file: &PathBuf) -> Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let target = Target {
        kubeconfig: cli.target.kubeconfig,
        context: cli.target.context,
        namespace: cli.target.namespace,
    };
    match cli.command {
        Command::Convert {
            file,
            from_cluster,
            check,
        } => {
            let connection = if from_cluster || check {
                Some(cluster::connect(&target).await?)
            } else {
                None
            };
            let text = match (&connection, from_cluster) {
                (Some(connection), true) => {
                    let namespace = target.namespace.as_deref().unwrap_or("metallb-system");
                    let (text, notes) =
                        cluster::metallb_configuration(&connection.client, namespace).await?;
                    for note in notes {
                        eprintln!("note: {note}");
                    }
                    text
                }
                _ => read_input(&file)?,
            };
            let converted = convert::convert(&text).map_err(anyhow::Error::msg)?;
            for warning in &converted.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", converted.to_yaml());
            if let Some(connection) = connection.filter(|_| check) {
                let objects: Vec<_> = converted.objects.iter().map(|(_, o)| o.clone()).collect();
                let verdicts = cluster::dry_run(&connection, &objects).await?;
                let refused = verdicts.iter().filter(|v| v.refused.is_some()).count();
                for verdict in &verdicts {
                    match &verdict.refused {
                        None => eprintln!("check: {}: accepted (dry run)", verdict.object),
                        Some(why) => eprintln!("check: {}: REFUSED: {why}", verdict.object),
                    }
                    for warning in &verdict.warnings {
                        eprintln!("check: {}: warning: {warning}", verdict.object);
                    }
                }
                if refused > 0 {
                    bail!(
                        "{refused} of {} object(s) refused by the apiserver",
                        verdicts.len()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            service,
            all_namespaces,
            output,
        } => {
            let cluster::Connection {
                client, namespace, ..
            } = cluster::connect(&target).await?;
            let name = service.map(|s| {
                s.strip_prefix("svc/")
                    .or_else(|| s.strip_prefix("service/"))
                    .or_else(|| s.strip_prefix("services/"))
                    .unwrap_or(&s)
                    .to_string()
            });
            if name.is_some() && all_namespaces {
                bail!("a Service name and -A do not go together");
            }
            let scope = (!all_namespaces).then_some(namespace.as_str());
            let snapshot = cluster::status_snapshot(&client, scope, name.as_deref()).await?;
            match (name, output) {
                (Some(_), Output::Text) => {
                    let report = status::report(&snapshot, &snapshot.services[0]);
                    print!("{}", status::render(&report, snapshot.now));
                }
                (Some(_), Output::Json) => {
                    let report = status::report(&snapshot, &snapshot.services[0]);
                    println!("{}", serde_json::to_string_pretty(&report)?);
                }
                (None, Output::Text) => print!("{}", status::table(&snapshot, all_namespaces)),
                (None, Output::Json) => {
                    let reports: Vec<_> = snapshot
                        .services
                        .iter()
                        .filter(|s| kubectl_ferrolb::snapshot::is_ours(s))
                        .map(|s| status::report(&snapshot, s))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&reports)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { output } => {
            let client = cluster::connect(&target).await?.client;
            let snapshot = cluster::doctor_snapshot(&client).await?;
            let findings = doctor::examine(&snapshot);
            match output {
                Output::Text => print!("{}", doctor::render(&findings)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
            }
            Ok(if doctor::failed(&findings) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
