<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="ketflow {{ version|e }}">
<title>sub-{{ subject|e }} &middot; ketflow report</title>
<link rel="stylesheet" href="{{ css_href|e }}">
<style>
body { padding-top: 4.2rem; }
section { scroll-margin-top: 4rem; }
section > h1 { border-bottom: 2px solid var(--bs-primary); padding-bottom: .3rem; margin-top: 2.2rem; font-size: 1.9rem; }
.reportlet { scroll-margin-top: 4rem; }
.reportlet h2 { font-size: 1.35rem; margin-top: 2rem; padding: .35rem .6rem; background: var(--bs-light); border-left: 4px solid var(--bs-primary); }
.reportlet h3 { font-size: 1.1rem; margin-top: 1.2rem; color: var(--bs-secondary-color); }
.elem-caption { font-size: .9rem; color: var(--bs-secondary-color); margin: .4rem 0 .2rem; max-width: 70rem; }
.elem-filename { font-size: .75rem; color: var(--bs-secondary-color); margin-bottom: 1rem; }
img.svg-reportlet, object.svg-reportlet { display: block; max-width: 100%; height: auto; background: #fff; }
.bids-entity { font-family: var(--bs-font-monospace); color: var(--bs-primary); }
.methods p { max-width: 60rem; }
.references { font-size: .85rem; }
pre.traceback { font-size: .75rem; background: var(--bs-light); padding: .5rem; white-space: pre-wrap; }
.toc { columns: 2; font-size: .9rem; }
details.run > summary { cursor: pointer; margin-top: 1rem; }
details.run > summary h2 { width: calc(100% - 1.5rem); margin-top: 0; font-size: 1.35rem; padding: .35rem .6rem;
  background: var(--bs-light); border-left: 4px solid var(--bs-primary); }
</style>
</head>
<body>
<nav class="navbar navbar-expand navbar-dark bg-dark fixed-top">
  <div class="container-fluid">
    <span class="navbar-brand">ketflow &middot; sub-{{ subject|e }}</span>
    <ul class="navbar-nav me-auto">
    {% for sub_report in sections %}
      <li class="nav-item"><a class="nav-link" href="#{{ sub_report.name|e }}">{{ sub_report.name|e }}</a></li>
    {% endfor %}
      <li class="nav-item"><a class="nav-link" href="#methods">Methods</a></li>
      <li class="nav-item"><a class="nav-link" href="#errors">Errors{% if n_errors %} <span class="badge text-bg-danger">{{ n_errors }}</span>{% endif %}</a></li>
    </ul>
  </div>
</nav>

<main class="container-fluid px-4">
<p class="text-body-secondary small mt-2 mb-0">ketflow {{ version|e }} &middot; configuration
  &lsquo;{{ config_name|e }}&rsquo; (SHA-256 <code>{{ config_hash[:12]|e }}</code>; resolved
  configuration in <a href="logs/config.json">logs/config.json</a>)</p>

{% for sub_report in sections %}
<section id="{{ sub_report.name|e }}">
  <h1>{{ sub_report.name|e }}</h1>
  {% if sub_report.isnested %}
  <ul class="toc">
    {% for run_report in sub_report.reportlets if run_report.title %}
    <li><a href="#{{ run_report.name|e }}">{{ run_report.title }}</a></li>
    {% endfor %}
  </ul>
  {% endif %}
  {% for run_report in sub_report.reportlets %}
  {# each run (a titled reportlet of a nested section and the untitled ones after it) opens on
     demand, so that the default page is the summary and one line per run #}
  {% if sub_report.isnested and run_report.title %}
  {% if not loop.first %}</details>{% endif %}
  <details class="run">
    <summary><h2 class="d-inline-block">{{ run_report.title }}</h2></summary>
  {% endif %}
  <div class="reportlet" id="{{ run_report.name|e }}">
    {% if run_report.title and not sub_report.isnested %}<h2>{{ run_report.title }}</h2>{% endif %}
    {% if run_report.subtitle %}<h3>{{ run_report.subtitle }}</h3>{% endif %}
    {% if run_report.description %}<p class="elem-desc">{{ run_report.description }}</p>{% endif %}
    {% for elem in run_report.components %}
      {% if elem[1] %}<p class="elem-caption">{{ elem[1] }}</p>{% endif %}
      {# niworkflows' SVG snippet closes the element's <div> itself; HTML fragments are wrapped here #}
      {% if 'class="svg-reportlet"' in elem[0] %}
      <div class="elem-image">{{ elem[0] }}
      {% else %}
      <div class="elem-html">{{ elem[0] }}</div>
      {% endif %}
    {% endfor %}
  </div>
  {% endfor %}
  {% if sub_report.isnested and sub_report.reportlets %}</details>{% endif %}
</section>
{% endfor %}

<section id="methods" class="methods">
  <h1>Methods</h1>
  <p class="text-body-secondary">Generated from the configuration and the runs processed for this participant;
    please use it, with its references, to describe the analysis.</p>
  {{ methods_html }}
  <details class="mt-3">
    <summary>Markdown</summary>
    <pre class="traceback">{{ methods_markdown|e }}</pre>
  </details>
</section>

<section id="errors">
  <h1>Errors</h1>
  {% if figure_errors %}
  <h2 class="h5 mt-3">Figures that could not be made</h2>
  <table class="table table-sm w-auto">
    <thead><tr><th>Run</th><th>Figure</th><th>File</th><th>Reason</th></tr></thead>
    <tbody>
    {% for e in figure_errors %}
      <tr><td>{{ e.where|e }}</td><td>{{ e.what|e }}</td><td><code>{{ e.figure|e }}</code></td><td>{{ e.message|e }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  {% endif %}
  {% if crashes %}
  <h2 class="h5 mt-3">Failed processing steps (Nipype crash files)</h2>
  {% for crash in crashes %}
  <details class="mb-2">
    <summary>Node <code>{{ crash.node|e }}</code> ({{ crash.when|e }})</summary>
    <p class="small mb-1">Crash file: <code>{{ crash.file|e }}</code></p>
    <pre class="traceback">{{ crash.traceback|e }}</pre>
  </details>
  {% endfor %}
  {% endif %}
  {% if not figure_errors and not crashes %}
  <p>No errors to report.</p>
  {% endif %}
</section>
</main>
</body>
</html>
