package handlers

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
)

// overviewPage is the data of audit_overview.html.
type overviewPage struct {
	Chart        chart
	LastDelivery time.Time
	Head         int64
	Projectors   []projections.Status
	Log          logStatus
	Access       []schema.Access
	Reconciles   []schema.ReconcileRun
}

// chart is a stacked bar chart of deliveries per day by event family,
// drawn by the template as inline SVG (no script: the CSP stays strict;
// colours come from style.css classes), with its numbers as a table for
// screen readers and a one-sentence summary.
type chart struct {
	Width, Height int
	Left, LabelX  int // the plot's left edge; the y labels' right edge
	AxisY         int // the x labels' baseline
	Bars          []chartBar
	YTicks        []chartTick
	XTicks        []chartTick
	Families      []chartFamily
	Rows          []chartRow
	Summary       string
}

type chartBar struct {
	Title    string
	Segments []chartSegment
}

type chartSegment struct {
	X, Y, W, H int
	Class      string
}

type chartTick struct {
	Pos   int
	Label string
}

type chartFamily struct {
	Name, Class string
	Total       int64
}

type chartRow struct {
	Day    time.Time
	Counts []int64 // per family, in Families order
	Total  int64
}

// chartFamilies is how many families the chart names; the rest are "other".
const chartFamilies = 5

// newChart lays out counts over days (oldest first).
func newChart(days []time.Time, counts []schema.DeliveryCount) chart {
	c := chart{Width: 640, Height: 220, Left: 44, LabelX: 38}
	const top, bottom = 10, 28
	c.AxisY = c.Height - 8
	// The busiest families by name, the rest as "other".
	totals := map[string]int64{}
	for _, n := range counts {
		totals[n.Family] += n.Deliveries
	}
	names := make([]string, 0, len(totals))
	for f := range totals {
		names = append(names, f)
	}
	slices.SortFunc(names, func(a, b string) int {
		if totals[a] != totals[b] {
			if totals[a] > totals[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	index := map[string]int{}
	for i, f := range names {
		if i < chartFamilies-1 || len(names) == chartFamilies {
			index[f] = i
			c.Families = append(c.Families, chartFamily{Name: f, Class: fmt.Sprintf("fam-%d", i), Total: totals[f]})
		}
	}
	if len(names) > len(c.Families) {
		other := chartFamily{Name: "other", Class: fmt.Sprintf("fam-%d", chartFamilies-1)}
		for _, f := range names[len(c.Families):] {
			index[f] = len(c.Families)
			other.Total += totals[f]
		}
		c.Families = append(c.Families, other)
	}
	byDay := map[time.Time]int{}
	for i, d := range days {
		byDay[d.UTC()] = i
		c.Rows = append(c.Rows, chartRow{Day: d, Counts: make([]int64, len(c.Families))})
	}
	var all, peak int64
	for _, n := range counts {
		i, ok := byDay[n.Day.UTC()]
		if !ok {
			continue
		}
		c.Rows[i].Counts[index[n.Family]] += n.Deliveries
		c.Rows[i].Total += n.Deliveries
		all += n.Deliveries
	}
	busiest := -1
	for i, r := range c.Rows {
		if r.Total > peak {
			peak, busiest = r.Total, i
		}
	}
	// A round y scale: 1, 2 or 5 times a power of ten per tick, four ticks.
	step := int64(1)
	for i, pow := 0, int64(1); step*4 < peak; i++ {
		if i%3 == 2 {
			pow *= 10
		}
		step = []int64{2, 5, 10}[i%3] * pow
		if i%3 == 2 {
			step = pow
		}
	}
	ymax := step * 4
	plotH := c.Height - top - bottom
	y := func(v int64) int { return top + plotH - int(int64(plotH)*v/ymax) }
	for v := int64(0); v <= ymax; v += step {
		c.YTicks = append(c.YTicks, chartTick{Pos: y(v), Label: fmt.Sprint(v)})
	}
	slot := (c.Width - c.Left) / max(1, len(days))
	for i, r := range c.Rows {
		x := c.Left + i*slot + 2
		bar := chartBar{Title: r.Day.Format("Mon 2 Jan") + ": " + fmt.Sprint(r.Total) + " deliveries"}
		var parts []string
		var below int64
		for j, n := range r.Counts {
			if n == 0 {
				continue
			}
			parts = append(parts, fmt.Sprintf("%d %s", n, c.Families[j].Name))
			top, bot := y(below+n), y(below)
			bar.Segments = append(bar.Segments, chartSegment{X: x, Y: top, W: slot - 4, H: max(1, bot-top), Class: c.Families[j].Class})
			below += n
		}
		if len(parts) > 0 {
			bar.Title += " (" + strings.Join(parts, ", ") + ")"
		}
		c.Bars = append(c.Bars, bar)
		if i%7 == 0 || (i == len(c.Rows)-1 && i%7 >= 4) {
			c.XTicks = append(c.XTicks, chartTick{Pos: x + (slot-4)/2, Label: r.Day.Format("2 Jan")})
		}
	}
	c.Summary = fmt.Sprintf("%d deliveries in the last %d days (by UTC day of arrival)", all, len(days))
	if busiest >= 0 {
		c.Summary += fmt.Sprintf("; the busiest day was %s with %d", c.Rows[busiest].Day.Format("Mon 2 Jan"), peak)
	}
	if len(c.Families) > 0 {
		var fs []string
		for _, f := range c.Families {
			fs = append(fs, fmt.Sprintf("%s %d", f.Name, f.Total))
		}
		c.Summary += "; by family: " + strings.Join(fs, ", ")
	}
	c.Summary += "."
	return c
}
