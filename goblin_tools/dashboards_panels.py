"""Panel builders for goblin_tools.dashboards: a KPI stat, a time series, a histogram quantile, the rows
every service dashboard has (gRPC, process), and the dashboard frame (data source variable, links,
panel ids), all on grafana-foundation-sdk's builders."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Health checks and scrapes are many, fast and say nothing of users: the KPIs leave them out, as the
# alert rules do.
USER_ROUTES = 'endpoint!~"/health.*|/metrics"'
GREEN, ORANGE, RED = "green", "orange", "red"


@dataclass(frozen=True)
class Q:
    """One PromQL query of a panel and its legend."""

    expr: str
    legend: str = ""


def targets(queries: Iterable[Q]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery().expr(q.expr).legend_format(q.legend or "__auto").ref_id(chr(ord("A") + i))
        for i, q in enumerate(queries)
    ]


def thresholds(base: str, steps: list[tuple[float, str]]) -> dashboard.ThresholdsConfig:
    """``base`` colour below the first step, then each step's colour from its value up."""
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(None, base), *(model.Threshold(v, c) for v, c in steps)])
    )


def kpi(
    title: str,
    query: Q,
    *,
    unit: str,
    steps: list[tuple[float, str]] | None = None,
    base: str = GREEN,
    description: str = "",
    mappings: dict[str, tuple[str, str]] | None = None,
    width: int = 4,
) -> stat.Panel:
    """A single number, coloured at ``steps`` (the alert thresholds)."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets([query]))
        .unit(unit)
        .height(5)
        .span(width)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds(base, steps or []))
    )
    if mappings:
        options = {value: model.ValueMappingResult(text=text, color=color) for value, (text, color) in mappings.items()}
        panel = panel.mappings([model.ValueMap(options)])
    return panel


def graph(
    title: str,
    *queries: Q,
    unit: str = "short",
    description: str = "",
    steps: list[tuple[float, str]] | None = None,
    base: str = GREEN,
    stacked: bool = False,
    width: int = 12,
) -> timeseries.Panel:
    """A time series of ``queries``; ``steps`` draw the alert thresholds as dashed lines (``base``: the
    colour below the first)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(queries))
        .unit(unit)
        .height(8)
        .span(width)
        .line_width(1)
        .fill_opacity(10 if not stacked else 40)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if steps:
        panel = panel.thresholds(thresholds(base, steps)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    return panel


def p(quantile: float, metric: str, selector: str = "", by: str = "", window: str = "5m") -> str:
    """``histogram_quantile`` of a histogram's rate, summed by ``le`` (and ``by``)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({labels}) (rate({metric}_bucket{{{selector}}}[{window}])))"


def board(uid: str, title: str, description: str, rows: list[tuple[str, list[Any]]]) -> model.Dashboard:
    builder = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["goblin"])
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .link(
            dashboard.DashboardLink("Goblin")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["goblin"])
            .as_dropdown(True)
            .keep_time(True)
            .include_vars(True)
        )
    )
    next_id = 1
    for row_title, panels in rows:
        builder = builder.with_row(dashboard.Row(row_title).id(next_id))
        next_id += 1
        for panel in panels:
            builder = builder.with_panel(panel.id(next_id))
            next_id += 1
    return builder.build()


def process_row(job: str) -> tuple[str, list[Any]]:
    """Memory against the limit, CPU, restarts and certificate life of one service's processes."""
    sel = f'job=~"(.*-)?{job}"'
    return (
        "Process",
        [
            graph(
                "Resident memory / limit",
                Q(
                    f"process_resident_memory_bytes{{{sel}}} / goblin_process_memory_limit_bytes{{{sel}}}",
                    "{{instance}}",
                ),
                unit="percentunit",
                steps=[(0.8, ORANGE), (0.9, RED)],
                width=6,
            ),
            graph(
                "CPU", Q(f"rate(process_cpu_seconds_total{{{sel}}}[5m])", "{{instance}}"), unit="percentunit", width=6
            ),
            graph(
                "Restarts (1 h)",
                Q(f"changes(process_start_time_seconds{{{sel}}}[1h])", "{{instance}}"),
                steps=[(3, ORANGE)],
                width=6,
            ),
            graph(
                "Certificate days left",
                Q(
                    f"(goblin_tls_certificate_not_after_timestamp_seconds{{{sel}}} - time()) / 86400",
                    "{{instance}} {{certificate}}",
                ),
                unit="d",
                width=6,
            ),
        ],
    )


def grpc_row(grpc_service: str) -> tuple[str, list[Any]]:
    sel = f'grpc_service="goblin.v1.{grpc_service}"'
    return (
        "gRPC",
        [
            graph(
                "Calls by method and code",
                Q(f"sum by (grpc_method, grpc_code) (rate(goblin_grpc_server_handled_total{{{sel}}}[5m]))"),
                unit="reqps",
            ),
            graph(
                "p95 handling time by method",
                Q(p(0.95, "goblin_grpc_server_handling_seconds", sel, by="grpc_method"), "{{grpc_method}}"),
                unit="s",
            ),
        ],
    )
