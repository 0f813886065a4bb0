//! `fargo usage`: what each function and each namespace under a profile used, read from their
//! `status.usage`, with a cost estimated from a rate card.
//!
//! The figures come from the status alone, so the report needs nothing but read access to the
//! objects, and agrees with the `fargo_usage_*` counters ([`super::metrics`]) that read the same
//! status. The pure part is [`rows`] and [`Report::render`]; [`report`] only lists the objects.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};
use kube::Client;
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};

use crate::api::usage::{DAYS_KEPT, HOURS_KEPT, UsageAmounts, UsageHistory};
use crate::api::{FargateProfile, ServerlessFunction};

// Messages leave their source out: `main` prints the chain, one cause a line.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading the rate card {path}")]
    Rates { path: PathBuf, source: RatesError },

    #[error(
        "the usage status keeps {HOURS_KEPT} hours by hour and {DAYS_KEPT} days by day, which does \
         not reach back to {since}: give a later --since, or none for the totals since metering \
         began"
    )]
    WindowTooLong { since: Timestamp },

    #[error("--since {since} is in the future (now is {now}): give an instant in the past")]
    SinceInFuture { since: Timestamp, now: Timestamp },

    #[error("reading the kubeconfig (KUBECONFIG, ~/.kube/config or a pod's service account)")]
    Kubeconfig(#[source] kube::Error),

    #[error("listing {what}")]
    List { what: String, source: kube::Error },

    #[error("writing the report as JSON")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// What is wrong with a rate card file.
#[derive(Debug, thiserror::Error)]
pub enum RatesError {
    #[error(transparent)]
    Read(#[from] std::io::Error),

    #[error("it is not a rate card: YAML or JSON with some of the fields of the default rates")]
    Parse(#[from] serde_yaml::Error),

    #[error("{field} is {value}; a price is a number of 0 or more")]
    Price { field: &'static str, value: f64 },
}

/// Prices per unit of [`UsageAmounts`]. The defaults are AWS's public prices in us-east-1 for
/// Lambda on x86 and Fargate on Linux/x86, as of [`Rates::date`]; a file may override any of
/// them ([`Rates::load`]).
///
/// Lambda's free tier (a million requests and 400,000 GB-seconds a month, per account) is not
/// applied: it is per AWS account and month, which a cluster's report cannot know, so the
/// estimate is what the use would cost beyond it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Rates {
    /// When the prices were read off AWS's pricing pages.
    pub date: String,
    pub region: String,
    pub currency: String,
    /// Per request ($0.20 per million).
    pub request_price: f64,
    /// Per GB-second of invocations. Invocations served by the warm instances of `scale.min`
    /// are priced on demand as well, though AWS bills those at provisioned concurrency's lower
    /// duration price: the estimate errs high, not low.
    pub gb_second_price: f64,
    /// Per GB-second of runtime initialization: AWS bills the INIT phase at the duration price
    /// since 1 August 2025. A file that sets `gbSecondPrice` and not this one sets both.
    pub init_gb_second_price: f64,
    /// Per GB-second of provisioned concurrency (the warm instances `scale.min` keeps).
    pub provisioned_gb_second_price: f64,
    /// Per vCPU-second of a Fargate pod ($0.04048 per vCPU-hour).
    pub fargate_vcpu_second_price: f64,
    /// Per GB-second of a Fargate pod's memory ($0.004445 per GB-hour).
    pub fargate_gb_second_price: f64,
}

impl Default for Rates {
    fn default() -> Self {
        const LAMBDA_GB_SECOND: f64 = 0.000_016_666_7;
        Self {
            date: "2025-08-01".to_string(),
            region: "us-east-1".to_string(),
            currency: "USD".to_string(),
            // $0.20 per million, written out: 0.20 / 1e6 is not exactly 2e-7 in binary.
            request_price: 0.000_000_2,
            gb_second_price: LAMBDA_GB_SECOND,
            init_gb_second_price: LAMBDA_GB_SECOND,
            provisioned_gb_second_price: 0.000_004_166_7,
            fargate_vcpu_second_price: 0.040_48 / 3600.0,
            fargate_gb_second_price: 0.004_445 / 3600.0,
        }
    }
}

impl Rates {
    /// Reads a rate card, YAML or JSON; the fields it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<Rates> {
        let failed = |source| ReportError::Rates {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.into()))?;
        Rates::parse(&text).map_err(failed)
    }

    /// A rate card's text. Unknown fields are refused: a misspelt price would otherwise keep
    /// its default without a word.
    pub fn parse(text: &str) -> Result<Rates, RatesError> {
        let mut rates: Rates = serde_yaml::from_str(text)?;
        let fields: serde_yaml::Value = serde_yaml::from_str(text)?;
        if fields.get("gbSecondPrice").is_some() && fields.get("initGbSecondPrice").is_none() {
            rates.init_gb_second_price = rates.gb_second_price;
        }
        for (field, value) in rates.prices() {
            if !value.is_finite() || value < 0.0 {
                return Err(RatesError::Price { field, value });
            }
        }
        Ok(rates)
    }

    fn prices(&self) -> [(&'static str, f64); 6] {
        [
            ("requestPrice", self.request_price),
            ("gbSecondPrice", self.gb_second_price),
            ("initGbSecondPrice", self.init_gb_second_price),
            ("provisionedGbSecondPrice", self.provisioned_gb_second_price),
            ("fargateVcpuSecondPrice", self.fargate_vcpu_second_price),
            ("fargateGbSecondPrice", self.fargate_gb_second_price),
        ]
    }

    /// The estimated cost of `amounts` used by a row of `kind`. `gbSeconds` are a function's
    /// Lambda GB-seconds and a profile's Fargate memory, priced apart.
    pub fn cost(&self, kind: Kind, amounts: &UsageAmounts) -> f64 {
        let memory_price = match kind {
            Kind::Function => self.gb_second_price,
            Kind::Profile => self.fargate_gb_second_price,
        };
        amounts.invocations as f64 * self.request_price
            + amounts.gb_seconds * memory_price
            + amounts.init_gb_seconds * self.init_gb_second_price
            + amounts.provisioned_gb_seconds * self.provisioned_gb_second_price
            + amounts.vcpu_seconds * self.fargate_vcpu_second_price
    }
}

/// What a row accounts for.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A ServerlessFunction.
    Function,
    /// The pods of one namespace under a FargateProfile.
    Profile,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Function => "function",
            Kind::Profile => "profile",
        }
    }
}

/// Amounts and their cost, every field written even when zero, so that scripts reading the
/// JSON need no defaults.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub invocations: u64,
    /// Lambda GB-seconds in a function's row, Fargate memory GB-seconds in a profile's; the
    /// total adds both (its cost prices each at its own rate).
    pub gb_seconds: f64,
    pub inits: u64,
    pub init_gb_seconds: f64,
    pub provisioned_gb_seconds: f64,
    pub pods: u64,
    pub vcpu_seconds: f64,
    pub cost: f64,
}

impl Figures {
    fn new(amounts: &UsageAmounts, cost: f64) -> Self {
        Self {
            invocations: amounts.invocations,
            gb_seconds: amounts.gb_seconds,
            inits: amounts.inits,
            init_gb_seconds: amounts.init_gb_seconds,
            provisioned_gb_seconds: amounts.provisioned_gb_seconds,
            pods: amounts.pods,
            vcpu_seconds: amounts.vcpu_seconds,
            cost,
        }
    }

    fn add(&mut self, other: &Figures) {
        self.invocations += other.invocations;
        self.gb_seconds += other.gb_seconds;
        self.inits += other.inits;
        self.init_gb_seconds += other.init_gb_seconds;
        self.provisioned_gb_seconds += other.provisioned_gb_seconds;
        self.pods += other.pods;
        self.vcpu_seconds += other.vcpu_seconds;
        self.cost += other.cost;
    }
}

/// One function, or the pods of one namespace under one profile.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub kind: Kind,
    /// The function's namespace, or the namespace of the profile's pods.
    pub namespace: String,
    /// The function's or the profile's name.
    pub name: String,
    #[serde(flatten)]
    pub figures: Figures,
}

impl Row {
    fn new(kind: Kind, namespace: &str, name: &str, amounts: &UsageAmounts, rates: &Rates) -> Self {
        Self {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            figures: Figures::new(amounts, round_cost(rates.cost(kind, amounts))),
        }
    }
}

/// The use a report covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The totals, since metering began.
    All,
    /// From the hourly or daily buckets that overlap the time since this instant.
    Since(Timestamp),
}

impl Window {
    /// Refuses a window the buckets cannot answer, before any object is read, so that the
    /// answer does not depend on which objects happen to have use.
    fn check(self, now: Timestamp) -> Result<()> {
        match self {
            Window::Since(since) if UsageHistory::default().since(since, now).is_none() => {
                Err(ReportError::WindowTooLong { since })
            }
            _ => Ok(()),
        }
    }

    fn amounts(self, history: &UsageHistory, now: Timestamp) -> Result<UsageAmounts> {
        match self {
            Window::All => Ok(history.total),
            Window::Since(since) => history
                .since(since, now)
                .ok_or(ReportError::WindowTooLong { since }),
        }
    }

    fn start(self) -> Option<Timestamp> {
        match self {
            Window::All => None,
            Window::Since(since) => Some(since),
        }
    }
}

/// `--since`: a duration back from now (`24h`, `90m`, `7d`, `1h30m`) or an RFC 3339 instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    Ago(SignedDuration),
    At(Timestamp),
}

impl FromStr for Since {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(at) = text.parse::<Timestamp>() {
            return Ok(Since::At(at));
        }
        let neither = || {
            format!(
                "{text:?} is neither a duration back from now (24h, 90m, 7d) nor an RFC 3339 \
                 instant (2026-11-01T00:00:00Z)"
            )
        };
        let span: Span = text.parse().map_err(|_| neither())?;
        // Days and weeks count as 24 and 168 hours: the buckets are UTC hours and days.
        let duration = span
            .to_duration(SpanRelativeTo::days_are_24_hours())
            .map_err(|_| format!("{text:?}: give the time in weeks, days, hours or minutes"))?;
        if duration <= SignedDuration::ZERO {
            return Err(format!("{text:?}: give a time back from now above zero"));
        }
        Ok(Since::Ago(duration))
    }
}

impl Since {
    /// The window this names, as of `now`.
    pub fn window(self, now: Timestamp) -> Result<Window> {
        let since = match self {
            Since::At(at) => at,
            Since::Ago(duration) => {
                now.checked_sub(duration)
                    .map_err(|_| ReportError::WindowTooLong {
                        since: Timestamp::MIN,
                    })?
            }
        };
        if since > now {
            return Err(ReportError::SinceInFuture { since, now });
        }
        Ok(Window::Since(since))
    }
}

/// The report's rows: one per function with usage and one per namespace under each profile with
/// usage, in the window, of `namespace` when given, sorted by namespace, kind and name.
pub fn rows(
    functions: &[ServerlessFunction],
    profiles: &[FargateProfile],
    window: Window,
    namespace: Option<&str>,
    rates: &Rates,
    now: Timestamp,
) -> Result<Vec<Row>> {
    window.check(now)?;
    let wanted = |ns: &str| namespace.is_none_or(|wanted| wanted == ns);
    let mut rows = Vec::new();
    for function in functions {
        let usage = function.status.as_ref().and_then(|s| s.usage.as_ref());
        let meta = &function.metadata;
        let (Some(usage), Some(ns), Some(name)) = (usage, &meta.namespace, &meta.name) else {
            continue;
        };
        if wanted(ns) {
            let amounts = window.amounts(&usage.history, now)?;
            rows.push(Row::new(Kind::Function, ns, name, &amounts, rates));
        }
    }
    for profile in profiles {
        let usage = profile.status.as_ref().and_then(|s| s.usage.as_ref());
        let (Some(usage), Some(name)) = (usage, &profile.metadata.name) else {
            continue;
        };
        for account in usage.namespaces.iter().filter(|a| wanted(&a.namespace)) {
            let amounts = window.amounts(&account.history, now)?;
            rows.push(Row::new(
                Kind::Profile,
                &account.namespace,
                name,
                &amounts,
                rates,
            ));
        }
    }
    rows.sort_by(|a, b| (&a.namespace, a.kind, &a.name).cmp(&(&b.namespace, b.kind, &b.name)));
    Ok(rows)
}

/// How the report is printed (`--output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns, a total and the rates used.
    #[default]
    Table,
    /// One JSON object: generated, since, rates, rows and total.
    Json,
    /// A header and one line per row (no total).
    Csv,
}

/// A report, ready to print.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub generated: Timestamp,
    pub window: Window,
    pub rates: Rates,
    /// The rate card file, when the rates are not the defaults.
    pub rates_file: Option<PathBuf>,
    pub rows: Vec<Row>,
}

#[derive(Serialize)]
struct ReportJson<'a> {
    generated: String,
    since: Option<String>,
    rates: &'a Rates,
    rows: &'a [Row],
    total: Figures,
}

const COLUMNS: [&str; 10] = [
    "KIND",
    "NAMESPACE",
    "NAME",
    "INVOCATIONS",
    "GB-S",
    "INIT-GB-S",
    "PROVISIONED-GB-S",
    "PODS",
    "VCPU-S",
    "COST",
];

/// The CSV header: the JSON rows' field names.
const CSV_HEADER: &str = "kind,namespace,name,invocations,gbSeconds,inits,initGbSeconds,\
                          provisionedGbSeconds,pods,vcpuSeconds,cost";

impl Report {
    pub fn total(&self) -> Figures {
        let mut total = Figures::default();
        for row in &self.rows {
            total.add(&row.figures);
        }
        total.cost = round_cost(total.cost);
        total
    }

    pub fn render(&self, output: Output) -> Result<String> {
        Ok(match output {
            Output::Table => self.table(),
            Output::Json => self.json()?,
            Output::Csv => self.csv(),
        })
    }

    fn json(&self) -> Result<String, serde_json::Error> {
        let mut text = serde_json::to_string_pretty(&ReportJson {
            generated: self.generated.to_string(),
            since: self.window.start().map(|since| since.to_string()),
            rates: &self.rates,
            rows: &self.rows,
            total: self.total(),
        })?;
        text.push('\n');
        Ok(text)
    }

    fn csv(&self) -> String {
        let mut text = format!("{CSV_HEADER}\n");
        for row in &self.rows {
            let f = &row.figures;
            let fields = [
                csv_field(row.kind.as_str()),
                csv_field(&row.namespace),
                csv_field(&row.name),
                f.invocations.to_string(),
                f.gb_seconds.to_string(),
                f.inits.to_string(),
                f.init_gb_seconds.to_string(),
                f.provisioned_gb_seconds.to_string(),
                f.pods.to_string(),
                f.vcpu_seconds.to_string(),
                f.cost.to_string(),
            ];
            text.push_str(&fields.join(","));
            text.push('\n');
        }
        text
    }

    fn table(&self) -> String {
        let mut lines: Vec<[String; 10]> = vec![COLUMNS.map(String::from)];
        for row in &self.rows {
            lines.push(table_cells(
                row.kind.as_str(),
                &row.namespace,
                &row.name,
                &row.figures,
            ));
        }
        lines.push(table_cells("TOTAL", "", "", &self.total()));
        let mut widths = [0; 10];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for line in &lines {
            let mut out = String::new();
            for (column, (cell, width)) in line.iter().zip(widths).enumerate() {
                if column > 0 {
                    out.push_str("  ");
                }
                // Names read from the left, numbers line up on their last digit.
                if column < 3 {
                    let _ = write!(out, "{cell:<width$}");
                } else {
                    let _ = write!(out, "{cell:>width$}");
                }
            }
            text.push_str(out.trim_end());
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&self.rates_line());
        text.push('\n');
        text.push_str(&self.window_line());
        text.push('\n');
        text
    }

    fn rates_line(&self) -> String {
        let Rates {
            date,
            region,
            currency,
            ..
        } = &self.rates;
        match &self.rates_file {
            Some(file) => format!(
                "Cost estimated in {currency} at the rates of {} ({region}, {date}).",
                file.display()
            ),
            None => format!(
                "Cost estimated in {currency} at AWS's public {region} prices of {date} \
                 (Lambda and Fargate on Linux/x86), without Lambda's free tier."
            ),
        }
    }

    fn window_line(&self) -> String {
        match self.window {
            Window::All => "Use since metering began.".to_string(),
            Window::Since(since) => format!(
                "Use since {since}: each hour, or each day beyond {HOURS_KEPT} hours, that \
                 overlaps the window counts whole."
            ),
        }
    }
}

/// A cost rounded to 1e-12 of the currency, far below any price, so that JSON and CSV read
/// `0.00000933335` rather than the binary noise of `0.000009333350000000001`.
fn round_cost(cost: f64) -> f64 {
    (cost * 1e12).round() / 1e12
}

fn table_cells(kind: &str, namespace: &str, name: &str, f: &Figures) -> [String; 10] {
    [
        kind.to_string(),
        namespace.to_string(),
        name.to_string(),
        f.invocations.to_string(),
        format!("{:.3}", f.gb_seconds),
        format!("{:.3}", f.init_gb_seconds),
        format!("{:.3}", f.provisioned_gb_seconds),
        f.pods.to_string(),
        format!("{:.3}", f.vcpu_seconds),
        // Micro-units: a few invocations cost millionths of a dollar.
        format!("{:.6}", f.cost),
    ]
}

/// A CSV field, quoted as RFC 4180 asks when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// What `fargo usage` was asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Functions of this namespace and the profile rows of its pods; every namespace when absent.
    pub namespace: Option<String>,
    /// The window; everything since metering began when absent.
    pub since: Option<Since>,
    pub output: Output,
    /// A rate card over the default prices.
    pub rates: Option<PathBuf>,
}

/// Lists the functions and profiles with the user's kubeconfig and renders their usage: the
/// text `fargo usage` prints.
pub async fn report(options: &Options) -> Result<String> {
    // The rate card and the window are checked before the cluster is asked anything, so that a
    // mistake in them is told first.
    let rates = match &options.rates {
        Some(path) => Rates::load(path)?,
        None => Rates::default(),
    };
    // Whole seconds: the report's instants read as RFC 3339 without nanoseconds.
    let now = Timestamp::now();
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let window = match options.since {
        Some(since) => since.window(now)?,
        None => Window::All,
    };
    window.check(now)?;

    let client = Client::try_default()
        .await
        .map_err(ReportError::Kubeconfig)?;
    let (functions, scope) = match &options.namespace {
        Some(ns) => (
            Api::<ServerlessFunction>::namespaced(client.clone(), ns),
            format!("namespace {ns}"),
        ),
        None => (Api::all(client.clone()), "all namespaces".to_string()),
    };
    let functions = functions
        .list(&ListParams::default())
        .await
        .map_err(|source| ReportError::List {
            what: format!("ServerlessFunctions in {scope}"),
            source,
        })?
        .items;
    let profiles = Api::<FargateProfile>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|source| ReportError::List {
            what: "FargateProfiles".to_string(),
            source,
        })?
        .items;

    let rows = rows(
        &functions,
        &profiles,
        window,
        options.namespace.as_deref(),
        &rates,
        now,
    )?;
    Report {
        generated: now,
        window,
        rates,
        rates_file: options.rates.clone(),
        rows,
    }
    .render(options.output)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::usage::{FunctionUsage, NamespaceUsage, ProfileUsage};
    use crate::api::{FargateProfileStatus, ServerlessFunctionStatus};

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    const NOW: &str = "2026-11-28T12:30:00Z";

    fn function(namespace: &str, name: &str, history: Option<UsageHistory>) -> ServerlessFunction {
        let spec = serde_json::from_value(serde_json::json!({"image": "example.com/app:1"}))
            .expect("a function spec");
        let mut function = ServerlessFunction::new(name, spec);
        function.metadata.namespace = Some(namespace.to_string());
        function.status = Some(ServerlessFunctionStatus {
            usage: history.map(|history| FunctionUsage {
                since: Time(at("2026-11-01T00:00:00Z")),
                updated: Time(at(NOW)),
                history,
                activators: vec![],
            }),
            ..Default::default()
        });
        function
    }

    fn profile(name: &str, namespaces: Vec<(&str, UsageHistory)>) -> FargateProfile {
        let spec = serde_json::from_value(serde_json::json!({"selectors": [{"namespace": "*"}]}))
            .expect("a profile spec");
        let mut profile = FargateProfile::new(name, spec);
        let mut total = UsageAmounts::default();
        for (_, history) in &namespaces {
            total.add(&history.total);
        }
        profile.status = Some(FargateProfileStatus {
            usage: Some(ProfileUsage {
                since: Time(at("2026-11-01T00:00:00Z")),
                updated: Time(at(NOW)),
                total,
                namespaces: namespaces
                    .into_iter()
                    .map(|(namespace, history)| NamespaceUsage {
                        namespace: namespace.to_string(),
                        history,
                    })
                    .collect(),
            }),
            ..Default::default()
        });
        profile
    }

    fn history(used: &[(&str, UsageAmounts)]) -> UsageHistory {
        let mut history = UsageHistory::default();
        for (when, amounts) in used {
            history.add(at(when), amounts);
        }
        history
    }

    fn lambda(invocations: u64, gb_seconds: f64) -> UsageAmounts {
        UsageAmounts {
            invocations,
            gb_seconds,
            ..Default::default()
        }
    }

    fn fargate(pods: u64, vcpu_seconds: f64, gb_seconds: f64) -> UsageAmounts {
        UsageAmounts {
            pods,
            vcpu_seconds,
            gb_seconds,
            ..Default::default()
        }
    }

    /// An error and its causes, as `main` prints them, on one line.
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn sample() -> (Vec<ServerlessFunction>, Vec<FargateProfile>) {
        let functions = vec![
            function(
                "media",
                "thumbnail",
                Some(history(&[
                    ("2026-11-20T10:00:00Z", lambda(1000, 100.0)),
                    ("2026-11-28T12:10:00Z", lambda(10, 1.0)),
                ])),
            ),
            function("media", "idle", None),
            function(
                "billing",
                "invoice",
                Some(history(&[("2026-11-28T11:00:00Z", lambda(5, 0.5))])),
            ),
        ];
        let profiles = vec![profile(
            "batch",
            vec![
                (
                    "media",
                    history(&[("2026-11-28T12:00:00Z", fargate(2, 3600.0, 7200.0))]),
                ),
                (
                    "billing",
                    history(&[("2026-11-27T09:00:00Z", fargate(1, 60.0, 120.0))]),
                ),
            ],
        )];
        (functions, profiles)
    }

    #[test]
    fn default_rates_are_awss_public_us_east_1_prices() {
        let rates = Rates::default();
        assert_eq!(rates.region, "us-east-1");
        assert_eq!(rates.date, "2025-08-01");
        assert!(close(rates.request_price, 0.000_000_2));
        assert_eq!(rates.init_gb_second_price, rates.gb_second_price);
        assert!(close(rates.fargate_vcpu_second_price * 3600.0, 0.04048));
        assert!(close(rates.fargate_gb_second_price * 3600.0, 0.004445));
    }

    #[test]
    fn functions_are_priced_at_lambdas_rates_and_profiles_at_fargates() {
        let rates = Rates::default();
        let function = UsageAmounts {
            invocations: 1_000_000,
            gb_seconds: 1000.0,
            inits: 10,
            init_gb_seconds: 100.0,
            provisioned_gb_seconds: 3600.0,
            ..Default::default()
        };
        let expected = 0.20 + 1100.0 * 0.000_016_666_7 + 3600.0 * 0.000_004_166_7;
        assert!(close(rates.cost(Kind::Function, &function), expected));

        // An hour of 1 vCPU and 2 GB.
        let pod = fargate(1, 3600.0, 7200.0);
        let expected = 0.04048 + 2.0 * 0.004445;
        assert!(close(rates.cost(Kind::Profile, &pod), expected));
    }

    #[test]
    fn rows_are_one_per_function_and_profile_namespace_sorted() {
        let (functions, profiles) = sample();
        let now = at(NOW);
        let rows = rows(
            &functions,
            &profiles,
            Window::All,
            None,
            &Rates::default(),
            now,
        )
        .unwrap();
        let keys: Vec<_> = rows
            .iter()
            .map(|r| (r.namespace.as_str(), r.kind, r.name.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("billing", Kind::Function, "invoice"),
                ("billing", Kind::Profile, "batch"),
                ("media", Kind::Function, "thumbnail"),
                ("media", Kind::Profile, "batch"),
            ],
            "the function without usage has no row"
        );
        assert_eq!(rows[2].figures.invocations, 1010);
        assert_eq!(rows[2].figures.gb_seconds, 101.0);
        let media_pods = &rows[3].figures;
        assert_eq!((media_pods.pods, media_pods.vcpu_seconds), (2, 3600.0));
        assert!(close(media_pods.cost, 0.04048 + 2.0 * 0.004445));
    }

    #[test]
    fn a_namespace_keeps_its_functions_and_its_pods_under_profiles() {
        let (functions, profiles) = sample();
        let rates = Rates::default();
        let rows = rows(
            &functions,
            &profiles,
            Window::All,
            Some("billing"),
            &rates,
            at(NOW),
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.namespace == "billing"));
    }

    #[test]
    fn a_window_sums_the_buckets_since_then() {
        let (functions, profiles) = sample();
        let now = at(NOW);
        let window = "24h".parse::<Since>().unwrap().window(now).unwrap();
        let rows = rows(&functions, &profiles, window, None, &Rates::default(), now).unwrap();
        let thumbnail = rows.iter().find(|r| r.name == "thumbnail").unwrap();
        assert_eq!(thumbnail.figures.invocations, 10, "20 November is outside");
        let billing_pods = rows
            .iter()
            .find(|r| r.kind == Kind::Profile && r.namespace == "billing")
            .unwrap();
        assert_eq!(billing_pods.figures.pods, 0, "27 November 09:00 is outside");
        assert_eq!(billing_pods.figures.cost, 0.0);
    }

    #[test]
    fn a_window_beyond_the_daily_buckets_is_refused_and_says_what_is_kept() {
        let now = at(NOW);
        let window = "40d".parse::<Since>().unwrap().window(now).unwrap();
        let error = rows(&[], &[], window, None, &Rates::default(), now).unwrap_err();
        assert!(matches!(error, ReportError::WindowTooLong { .. }));
        let message = error.to_string();
        assert!(
            message.contains("48 hours by hour and 32 days by day"),
            "{message}"
        );
    }

    #[test]
    fn since_reads_durations_and_instants() {
        let now = at(NOW);
        let window = |text: &str| text.parse::<Since>().unwrap().window(now).unwrap();
        assert_eq!(window("24h"), Window::Since(at("2026-11-27T12:30:00Z")));
        assert_eq!(window("90m"), Window::Since(at("2026-11-28T11:00:00Z")));
        assert_eq!(window("7d"), Window::Since(at("2026-11-21T12:30:00Z")));
        assert_eq!(
            window("2026-11-28T00:00:00Z"),
            Window::Since(at("2026-11-28T00:00:00Z"))
        );
        for wrong in ["yesterday", "-3h", "0s", "2mo", ""] {
            assert!(wrong.parse::<Since>().is_err(), "{wrong:?} was accepted");
        }
        let future = "2027-01-01T00:00:00Z".parse::<Since>().unwrap().window(now);
        assert!(matches!(future, Err(ReportError::SinceInFuture { .. })));
    }

    #[test]
    fn a_rate_card_overrides_some_prices_and_refuses_typos() {
        let rates = Rates::parse("region: eu-west-1\ndate: '2026-01-01'\ngbSecondPrice: 0.00002\n")
            .unwrap();
        assert_eq!(rates.region, "eu-west-1");
        assert_eq!(rates.gb_second_price, 0.00002);
        assert_eq!(
            rates.init_gb_second_price, 0.00002,
            "init follows the duration price"
        );
        assert_eq!(rates.request_price, Rates::default().request_price);

        let json = Rates::parse(r#"{"gbSecondPrice": 0.00002, "initGbSecondPrice": 0}"#).unwrap();
        assert_eq!(json.init_gb_second_price, 0.0);

        let typo = chain(&Rates::parse("gbSecondPrize: 0.00002\n").unwrap_err());
        assert!(typo.contains("unknown field `gbSecondPrize`"), "{typo}");
        let negative = chain(&Rates::parse("requestPrice: -1\n").unwrap_err());
        assert!(negative.contains("requestPrice is -1"), "{negative}");
    }

    #[test]
    fn a_missing_rate_card_is_named() {
        let error = chain(&Rates::load(Path::new("/nonexistent/rates.yaml")).unwrap_err());
        assert!(
            error.starts_with("reading the rate card /nonexistent/rates.yaml: No such file"),
            "{error}"
        );
    }

    fn report(window: Window) -> Report {
        let (functions, profiles) = sample();
        let now = at(NOW);
        let rates = Rates::default();
        Report {
            generated: now,
            window,
            rows: rows(&functions, &profiles, window, None, &rates, now).unwrap(),
            rates,
            rates_file: None,
        }
    }

    #[test]
    fn json_has_every_amount_of_every_row_and_the_total() {
        let text = report(Window::All).render(Output::Json).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["generated"], NOW);
        assert_eq!(json["since"], serde_json::Value::Null);
        assert_eq!(json["rates"]["region"], "us-east-1");
        assert_eq!(json["rates"]["requestPrice"], 0.000_000_2);
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4);
        let fields = [
            "invocations",
            "gbSeconds",
            "inits",
            "initGbSeconds",
            "provisionedGbSeconds",
            "pods",
            "vcpuSeconds",
            "cost",
        ];
        for row in rows.iter().chain([&json["total"]]) {
            for field in fields {
                assert!(row[field].is_number(), "{field} missing in {row}");
            }
        }
        assert_eq!(rows[0]["kind"], "function");
        assert_eq!(rows[0]["namespace"], "billing");
        assert_eq!(rows[0]["name"], "invoice");
        assert_eq!(json["total"]["invocations"], 1015);
        assert_eq!(json["total"]["pods"], 3);

        let since = report(Window::Since(at("2026-11-28T00:00:00Z")));
        let json: serde_json::Value =
            serde_json::from_str(&since.render(Output::Json).unwrap()).unwrap();
        assert_eq!(json["since"], "2026-11-28T00:00:00Z");
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_row() {
        let text = report(Window::All).render(Output::Csv).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 5, "no total line: {text}");
        // 5 requests and 0.5 GB-s: 5 × 0.0000002 + 0.5 × 0.0000166667.
        assert_eq!(
            lines[1],
            "function,billing,invoice,5,0.5,0,0,0,0,0,0.00000933335"
        );
        assert!(lines.iter().all(|l| l.split(',').count() == 11));
    }

    #[test]
    fn csv_quotes_fields_with_commas_and_quotes() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn table_aligns_columns_and_ends_with_the_total_and_the_rates() {
        let text = report(Window::All).render(Output::Table).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("KIND      NAMESPACE  NAME       INVOCATIONS"));
        assert!(lines[0].ends_with("COST"));
        assert!(lines[1].starts_with("function  billing    invoice"));
        assert!(lines[5].starts_with("TOTAL"));
        let cost_end = lines[0].len();
        for line in &lines[1..=5] {
            assert_eq!(line.len(), cost_end, "numbers end under COST: {line:?}");
        }
        assert_eq!(lines[6], "");
        assert!(
            lines[7].contains("us-east-1 prices of 2025-08-01"),
            "{text}"
        );
        assert_eq!(lines[8], "Use since metering began.");
    }

    #[test]
    fn table_names_a_rate_card_file() {
        let mut report = report(Window::All);
        report.rates_file = Some(PathBuf::from("rates.yaml"));
        let text = report.render(Output::Table).unwrap();
        assert!(text.contains("at the rates of rates.yaml (us-east-1, 2025-08-01)"));
    }
}
