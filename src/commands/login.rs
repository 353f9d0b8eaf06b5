//! `regctl login`: configure this machine's container clients for the registry (see
//! `crate::ops::login`).

use crate::cli::LoginArgs;
use crate::ops::login::{self, ClientPaths, Stored};
use crate::ops::users::{PasswordSource, read_password, validate_user_name};

/// Runs `regctl login`.
pub fn run(args: LoginArgs) -> anyhow::Result<()> {
    validate_user_name(&args.user_name)?;
    let source = if args.password_stdin { PasswordSource::Stdin } else { PasswordSource::Prompt };
    let secret = read_password(source, &args.user_name)?;
    if let Some(name) = &args.kubernetes_secret {
        print!("{}", login::kubernetes_secret(name, &args.registry, &args.user_name, &secret));
        return Ok(());
    }
    let paths = ClientPaths::from_env();
    if let Some(ca) = &args.ca {
        let pem = login::read_ca(ca)?;
        for file in login::install_ca(&paths, &args.registry, &pem)? {
            eprintln!("trusted the registry's CA: {}", file.display());
        }
    }
    match login::store_credentials(&paths, &args.registry, &args.user_name, &secret)? {
        Stored::Helper(helper) => {
            eprintln!("credentials of {} stored by docker-credential-{helper}", args.user_name);
        }
        Stored::PlainText(file) => eprintln!(
            "no docker credential helper is configured (credsStore/credHelpers): the credentials of \
             {} are written base64-encoded, not encrypted, in {}; configure a helper to keep them out \
             of the file",
            args.user_name,
            file.display()
        ),
    }
    Ok(())
}
