{#-
    The daily run's id, stamped on what a build writes: `--vars '{run_id: ...}'` if given, else
    the MOOVITAMIX_RUN_ID environment variable that `python -m dbt_project` exports (an env
    var: changing it re-parses only the files that use it, a var the whole project).
-#}
{% macro run_id() -%}
    {{ return(var('run_id', env_var('MOOVITAMIX_RUN_ID', 'manual'))) }}
{%- endmacro %}
