//! `ledgertail setup-postgres --postgres URL [--schema S] [--grant ROLE
//! (--source NAME... | --all-sources)] [--print]`: the fleet store's
//! schema created or migrated by its owner, and an ingest role granted the
//! least that shipping needs (USAGE on the schema, reading and inserting
//! events, reading ledgers and schema_version, EXECUTE on the shipping
//! functions) and the sources it may ship, so that a sidecar runs with a
//! role that cannot change a shipped row, move a head by hand, alter the
//! schema or write another host's ledgers. 0 done, 2 could not.

use std::process::ExitCode;

use anyhow::Context as _;

use super::{exit, EXIT_OK};
use crate::cli::{PayloadJsonArg, SetupPostgresArgs};
use crate::postgres::payload_json::{self, PayloadJson};
use crate::postgres::{self, schema, Target, Timeouts};

pub fn run(args: SetupPostgresArgs) -> anyhow::Result<ExitCode> {
    let table = crate::config::PostgresTable {
        url: Some(args.postgres.clone()),
        source: Some("setup".into()),
        schema: Some(args.schema.clone()),
        // verify-ca and verify-full are checked with the CA file given.
        ca_file: args.ca_file.clone(),
        ..Default::default()
    };
    // The schema name is checked as the config checks it.
    table.resolve(std::path::Path::new("/"))?;
    let sources = if args.all_sources {
        schema::Sources::All
    } else {
        schema::Sources::Only(&args.source)
    };
    if !args.grant.is_empty() && args.source.is_empty() && !args.all_sources {
        anyhow::bail!(
            "--grant needs the sources the role may ship\nhint: add --source NAME (repeatable; the `source` under [postgres] of that host's sidecar), or --all-sources for a role every host shares (any host holding it can then write every host's ledgers)"
        );
    }
    if args.print {
        for role in &args.grant {
            outln!("{}", schema::ingest_grants(&args.schema, role, sources));
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
    .context("--postgres")?;
    let client = target.connect()?;
    schema::ensure(&client, &args.schema)
        .with_context(|| format!("creating or migrating schema {}", args.schema))?;
    if let Some(how) = args.payload_json {
        let (want, said) = match how {
            PayloadJsonArg::Stored => (PayloadJson::Stored, "stored"),
            PayloadJsonArg::Computed => (PayloadJson::Computed, "computed"),
        };
        payload_json::set(&client, &args.schema, want)
            .with_context(|| format!("making payload_json of schema {} {said}", args.schema))?;
    }
    let json = payload_json::current(&client, &args.schema)?;
    outln!(
        "{}: schema {} at version {}, revision {}; {}",
        target.shown(),
        args.schema,
        schema::VERSION,
        schema::REVISION,
        json.describe()
    );
    for role in &args.grant {
        schema::grant_ingest(&client, &args.schema, role, sources)
            .with_context(|| format!("granting role {role} the ingest privileges"))?;
        outln!(
            "{}: role {role} may ship {} into {} (and do nothing else there)",
            target.shown(),
            match sources {
                schema::Sources::All => "every source".to_owned(),
                schema::Sources::Only(names) => format!("source {}", names.join(", ")),
            },
            args.schema
        );
    }
    Ok(exit(EXIT_OK))
}
