//! The status page, `GET /`: HTML for a browser (its `Accept` names `text/html`), the plain
//! text it always was for curl and scripts (anything else).
//!
//! The HTML is one self-contained document: inline CSS, charts drawn as inline SVG, no script,
//! and nothing fetched from anywhere else (no font, image or style sheet), so it works on a LAN
//! without internet and tells no third party who looked. It shows what the text shows, the
//! counters and the peers heard recently (IPv6 by /64, never a full address), with each peer's
//! discovery protocol versions and last contact, and what the ledger knows of this host: its
//! package bytes from the LAN against the mirror, what it served to peers, per hour over the
//! last day and per day over the last week ([`crate::daemon::ledger::history`]). Hours are UTC:
//! the daemon cannot know the reader's time zone.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::daemon::ledger::Ledger;
use crate::daemon::ledger::history::Hour;
use crate::daemon::peers::{self, FORGET_AFTER};
use crate::daemon::stats::Stats;
use crate::protocol::report::{Totals, size};

/// What the page shows, besides the counters.
pub struct Page<'a> {
    pub stats: &'a Stats,
    pub ledger: &'a Ledger,
    pub daemon_id: &'a str,
    pub cache_dirs: usize,
}

/// Whether a request's `Accept` asks for HTML (a browser's does; curl's `*/*` does not).
pub fn wants_html(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            range
                .split(';')
                .next()
                .is_some_and(|t| t.trim() == "text/html")
        })
    })
}

/// The plain-text page: the counters and peers, then this host's savings.
pub fn text(page: &Page) -> String {
    let mut out = page.stats.render(page.daemon_id, page.cache_dirs);
    let totals = page.ledger.totals();
    let (lan, mirror) = (totals.tally.lan_bytes(), totals.tally.mirror_bytes());
    let _ = writeln!(
        out,
        "package bytes since {}: {lan} from the LAN, {mirror} from the mirror; {} served to peers",
        date(totals.since),
        totals.served
    );
    out
}

/// Series colours, also the test's way to find the charts in a screenshot.
const SERVED: &str = "#3b7dd8";
const LAN: &str = "#2ca25f";
const MIRROR: &str = "#e6550d";

/// The HTML page.
pub fn html(page: &Page) -> String {
    let totals = page.ledger.totals();
    let hours = page.ledger.last_hours(history_hours());
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"60\">\
         <title>pacserved {id}</title><style>{STYLE}</style></head><body>\n\
         <h1>pacserved {version}</h1><p class=\"sub\">id {id}, up {up}, {dirs} cache \
         directories</p>\n",
        id = esc(page.daemon_id),
        version = env!("CARGO_PKG_VERSION"),
        up = duration(page.stats.uptime()),
        dirs = page.cache_dirs,
    );
    savings(&mut out, &totals);
    let day: Vec<Bar> = hours[hours.len().saturating_sub(24)..]
        .iter()
        .map(|h| Bar::of(hour_label(h.hour), std::slice::from_ref(h)))
        .collect();
    let week: Vec<Bar> = hours
        .chunk_by(|a, b| a.hour / 24 == b.hour / 24)
        .map(|day| Bar::of(day_label(day[0].hour / 24), day))
        .collect();
    let week = &week[week.len().saturating_sub(7)..];
    chart(
        &mut out,
        "day",
        "The last 24 hours (UTC), per hour",
        &day,
        6,
    );
    chart(&mut out, "week", "The last 7 days (UTC), per day", week, 1);
    peer_table(&mut out, page.stats);
    out.push_str("<h2>Counters</h2><table class=\"counters\">\n");
    for (label, value) in page.stats.counters() {
        let _ = writeln!(out, "<tr><td>{label}</td><td class=\"n\">{value}</td></tr>");
    }
    out.push_str(
        "</table>\n<p class=\"sub\">The same as plain text: <code>curl this-host:15678</code>. \
         For Prometheus: <code>/metrics</code>.</p>\n\
         </body></html>\n",
    );
    out
}

/// Hours of history the charts need: the last 7 days, today's hours included.
fn history_hours() -> usize {
    let today = crate::daemon::ledger::history::this_hour() % 24;
    6 * 24 + today as usize + 1
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:60em;\
padding:0 1em;color:#222;background:#fff}h1{margin:0}h2{margin:1.4em 0 .4em;font-size:1.1em}\
.sub{color:#666;margin:.2em 0}.big{font-size:1.35em;margin:.6em 0}table{border-collapse:collapse}\
td,th{padding:.15em .8em .15em 0;text-align:left}.n{text-align:right;font-variant-numeric:\
tabular-nums}svg{max-width:100%;height:auto}.grid{stroke:#ddd}.axis{fill:#666;font-size:11px}\
.key{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em;vertical-align:-.05em}";

fn savings(out: &mut String, totals: &Totals) {
    let (lan, mirror) = (totals.tally.lan_bytes(), totals.tally.mirror_bytes());
    let total = lan.saturating_add(mirror);
    let share = match total {
        0 => String::from("no package downloaded yet"),
        _ => format!(
            "{:.0} % of this host's package bytes came from the LAN",
            lan as f64 * 100.0 / total as f64
        ),
    };
    let _ = write!(
        out,
        "<h2>Savings since {since}</h2><p class=\"big\">{share}: {lan_h} from LAN peers, \
         {mirror_h} from the mirror. It served {served_h} to its peers.</p>\n\
         <table class=\"savings\"><tr><td>from the LAN</td><td class=\"n\">{lan}</td>\
         <td>bytes</td></tr><tr><td>from the mirror</td><td class=\"n\">{mirror}</td>\
         <td>bytes</td></tr><tr><td>served to peers</td><td class=\"n\">{served}</td>\
         <td>bytes</td></tr></table>\n",
        since = date(totals.since),
        lan_h = size(lan),
        mirror_h = size(mirror),
        served_h = size(totals.served),
        served = totals.served,
    );
}

/// One group of bars: bytes served, from the LAN, from the mirror.
struct Bar {
    label: String,
    values: [u64; 3],
}

impl Bar {
    fn of(label: String, hours: &[Hour]) -> Bar {
        let sum = |f: fn(&Hour) -> u64| hours.iter().fold(0u64, |s, h| s.saturating_add(f(h)));
        Bar {
            label,
            values: [sum(|h| h.served), sum(|h| h.lan), sum(|h| h.mirror)],
        }
    }
}

/// A bar chart of `bars`, every `label_every`th labelled.
fn chart(out: &mut String, id: &str, title: &str, bars: &[Bar], label_every: usize) {
    const W: f64 = 720.0;
    const H: f64 = 200.0;
    const LEFT: f64 = 64.0;
    const TOP: f64 = 10.0;
    let (plot_w, plot_h) = (W - LEFT - 8.0, H - TOP - 26.0);
    let most = bars.iter().flat_map(|b| b.values).max().unwrap_or(0).max(1);
    let group = plot_w / bars.len().max(1) as f64;
    let bar_w = (group * 0.8 / 3.0).max(1.0);
    let _ = write!(
        out,
        "<h2>{title}</h2><svg id=\"{id}\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"{title}\">"
    );
    for step in 0..=2 {
        let y = TOP + plot_h - plot_h * f64::from(step) / 2.0;
        let value = most / 2 * u64::from(step as u8);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{W}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 4.0,
            size(value)
        );
    }
    for (i, bar) in bars.iter().enumerate() {
        let x0 = LEFT + group * i as f64 + group * 0.1;
        for (k, (value, colour)) in bar.values.iter().zip([SERVED, LAN, MIRROR]).enumerate() {
            let h = plot_h * *value as f64 / most as f64;
            if *value == 0 {
                continue;
            }
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" \
                 fill=\"{colour}\"><title>{}: {value} bytes</title></rect>",
                x0 + bar_w * k as f64,
                TOP + plot_h - h,
                esc(&bar.label)
            );
        }
        if i % label_every == 0 || i + 1 == bars.len() {
            let _ = write!(
                out,
                "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x0 + bar_w * 1.5,
                H - 8.0,
                esc(&bar.label)
            );
        }
    }
    let _ = writeln!(
        out,
        "</svg><p class=\"sub\"><span class=\"key\" style=\"background:{SERVED}\"></span>served \
         to peers<span class=\"key\" style=\"background:{LAN}\"></span>from the LAN<span \
         class=\"key\" style=\"background:{MIRROR}\"></span>from the mirror</p>"
    );
}

fn peer_table(out: &mut String, stats: &Stats) {
    let (seen, total) = stats.peers().seen(std::time::Instant::now());
    let _ = write!(
        out,
        "<h2>Peers heard in the last {} minutes: {total}</h2>",
        FORGET_AFTER.as_secs() / 60
    );
    if seen.is_empty() {
        return;
    }
    out.push_str(
        "<table class=\"peers\"><tr><th>peer</th><th>addresses</th><th>protocol</th>\
         <th class=\"n\">requests</th><th>last contact</th></tr>\n",
    );
    for peer in seen {
        let protocol = match peer.versions.is_empty() {
            true => "HTTP only".to_owned(),
            false => peers::versions(&peer.versions),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{protocol}</td><td class=\"n\">{}</td>\
             <td>{} ago</td></tr>",
            esc(&peer.label),
            peer.addresses,
            peer.requests,
            duration(peer.ago)
        );
    }
    out.push_str("</table>\n");
}

/// `3 h 12 min`, `42 s`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// `Thu, 04 Dec 2026 10:00:00 GMT` for seconds since the epoch.
fn date(secs: u64) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// `10:00` for an hour since the epoch.
fn hour_label(hour: u64) -> String {
    format!("{:02}:00", hour % 24)
}

/// `Thu 04` for a day since the epoch.
fn day_label(day: u64) -> String {
    let date = date(day * 86400);
    format!("{} {}", &date[..3], &date[5..7])
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn browsers_get_html_and_curl_gets_text() {
        assert!(wants_html(Some(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!wants_html(Some("*/*")));
        assert!(!wants_html(None));
        assert!(!wants_html(Some("text/htmlx")));
    }

    #[test]
    fn the_page_stands_alone_and_shows_what_was_counted() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let ledger = Ledger::open(dir.path(), dir.path().join("db"), stats.clone());
        Stats::add(&stats.bytes_served, 123_456);
        ledger.record(None, crate::daemon::ledger::From::Mirror, 7_654_321);
        stats.heard("fd00:1::5".parse().unwrap(), Some(3));
        let page = Page {
            stats: &stats,
            ledger: &ledger,
            daemon_id: "<id>",
            cache_dirs: 1,
        };
        let html = html(&page);
        for present in [
            "<td class=\"n\">7654321</td>",
            "<td class=\"n\">123456</td>",
            "id &lt;id&gt;",
            "<td>fd00:1::/64</td>",
            "<td>v3</td>",
            &format!("fill=\"{MIRROR}\""),
            &format!("fill=\"{SERVED}\""),
        ] {
            assert!(html.contains(present), "{present} in {html}");
        }
        for external in [
            "src=", "href=", "url(", "@import", "<script", "<link", "http:",
        ] {
            assert!(!html.contains(external), "{external} in {html}");
        }
        let text = text(&page);
        assert!(
            text.contains("0 from the LAN, 7654321 from the mirror"),
            "{text}"
        );
        assert!(!text.contains("<table"), "{text}");
    }

    #[test]
    fn labels_read_as_clocks_and_calendars_do() {
        assert_eq!(hour_label(24 * 10 + 7), "07:00");
        assert_eq!(day_label(0), "Thu 01");
        assert_eq!(
            duration(Duration::from_secs(3 * 3600 + 12 * 60)),
            "3 h 12 min"
        );
    }
}
