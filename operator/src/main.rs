//! `pg-flo-operator`: command line of the pg_flo Kubernetes operator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pg_flo_operator::crd;

#[derive(Parser)]
#[command(
    name = "pg-flo-operator",
    version,
    about = "Kubernetes operator for pg_flo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as multi-document YAML, or write one file per CRD.
    Crd {
        /// Write `<plural>.pgflo.io.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Crd { out_dir: None } => {
            print!("{}", crd::all_crds_yaml()?);
        }
        Command::Crd { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for c in crd::all_crds() {
                let path = dir.join(crd::crd_file_name(&c));
                std::fs::write(&path, crd::crd_yaml(&c)?)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
