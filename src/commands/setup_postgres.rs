//! `ledgertail setup-postgres --postgres URL [--schema S] [--grant ROLE]
//! [--print]` (v1.2): the fleet store's schema created or migrated by its
//! owner, and an ingest role granted the least that shipping needs
//! (USAGE on the schema, reading and inserting events, reading ledgers
//! and schema_version, EXECUTE on ship_begin and ship_end), so that the
//! sidecars can run with a role that cannot change a shipped row, move a
//! head by hand or alter the schema. 0 done, 2 could not.

use std::process::ExitCode;

use anyhow::Context as _;

use super::{exit, EXIT_OK};
use crate::cli::SetupPostgresArgs;
use crate::postgres::{self, schema, Target, Timeouts};

pub fn run(args: SetupPostgresArgs) -> anyhow::Result<ExitCode> {
    let table = crate::config::PostgresTable {
        url: Some(args.postgres.clone()),
        source: Some("setup".into()),
        schema: Some(args.schema.clone()),
        ..Default::default()
    };
    // The schema name is checked as the config checks it.
    table.resolve(std::path::Path::new("/"))?;
    if args.print {
        for role in &args.grant {
            println!("{}", schema::ingest_grants(&args.schema, role));
        }
        return Ok(exit(EXIT_OK));
    }
    let target = Target::parse(
        &args.postgres,
        args.ca_file.as_deref(),
        Timeouts {
            connect: std::time::Duration::from_secs(10),
            statement: std::time::Duration::from_secs(300),
        },
        std::env::var(postgres::PASSWORD_ENV).ok(),
    )
    .map_err(anyhow::Error::msg)
    .context("--postgres")?;
    let mut client = target.connect()?;
    schema::ensure(&mut client, &args.schema)
        .with_context(|| format!("creating or migrating schema {}", args.schema))?;
    println!(
        "{}: schema {} at version {}",
        target.shown(),
        args.schema,
        schema::VERSION
    );
    for role in &args.grant {
        schema::grant_ingest(&mut client, &args.schema, role)
            .with_context(|| format!("granting role {role} the ingest privileges"))?;
        println!(
            "{}: role {role} may ship into {} (and do nothing else there)",
            target.shown(),
            args.schema
        );
    }
    Ok(exit(EXIT_OK))
}
