//! Optional mDNS announcement (`pacserved --mdns`), so pacredir users on the same LAN find our
//! daemons and fetch from `/pkg/<file>` the way they fetch from each other.
//!
//! The service is `_pacserve._tcp` on the HTTP port, with TXT `id` (the os-release `ID`, such as
//! `arch`) and `arch` (the machine architecture), the records pacredir's peers publish. The
//! announcement is done by the maintained `mdns-sd` crate on its own thread; addresses follow
//! the interfaces automatically.

use std::collections::HashMap;

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

pub const SERVICE_TYPE: &str = "_pacserve._tcp.local.";

/// Starts announcing; keep the returned daemon alive for as long as the announcement should last.
pub fn announce(http_port: u16, interfaces: &[String]) -> Result<ServiceDaemon, String> {
    let mdns = ServiceDaemon::new().map_err(|e| format!("mDNS: {e}"))?;
    if !interfaces.is_empty() {
        let _ = mdns.disable_interface(IfKind::All);
        for name in interfaces {
            let _ = mdns.enable_interface(IfKind::Name(name.clone()));
        }
    }
    let host = hostname();
    let properties = HashMap::from([
        ("id".to_owned(), os_release_id()),
        ("arch".to_owned(), std::env::consts::ARCH.to_owned()),
    ]);
    let info = ServiceInfo::new(
        SERVICE_TYPE,
        &host,
        &format!("{host}.local."),
        "",
        http_port,
        properties,
    )
    .map_err(|e| format!("mDNS: {e}"))?
    .enable_addr_auto();
    mdns.register(info).map_err(|e| format!("mDNS: {e}"))?;
    Ok(mdns)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pacserved".to_owned())
}

/// `ID=` from /etc/os-release (or /usr/lib/os-release), unquoted; "linux" when absent, as
/// os-release(5) specifies.
fn os_release_id() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("ID="))
                .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_owned())
        })
        .unwrap_or_else(|| "linux".to_owned())
}
