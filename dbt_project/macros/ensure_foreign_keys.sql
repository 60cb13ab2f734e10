{#-
    Put back the named foreign keys of contracted tables that are missing in the database.

    dbt rebuilds a table by building a new one and swapping it in; the old one is dropped with
    CASCADE, which also drops every foreign key that pointed at it from tables that were not
    rebuilt in the same run (the incremental fct_listens always; any table outside a --select).
    Adding a foreign key validates every row, so a key that cannot be put back fails the build.

    As a post-hook of every mart, `ensure_foreign_keys(model)` adds the model's foreign keys,
    which its CREATE TABLE leaves out (macros/table_constraints.sql): rows that break one fail
    the model. As on-run-end, with no argument, it puts back those of every model that still
    hold; a key that no longer holds (a table outside a --select refers to rows that are gone)
    is left out with a warning naming the table to rebuild. Only named constraints are
    handled: all of this project's foreign keys have a name. Postgres only: Spark enforces no
    key (the dbt tests check them there).
-#}
{% macro ensure_foreign_keys(node=none) %}
    {%- if not execute or target.type != 'postgres' -%}
        {{ return('') }}
    {%- endif -%}
    {%- if node is not none -%}
        {%- set nodes = [node] -%}
    {%- else -%}
        {%- set nodes = [] -%}
        {%- for candidate in graph.nodes.values() -%}
            {%- if candidate.resource_type == 'model'
                and candidate.package_name == project_name
                and candidate.config.materialized in ('table', 'incremental') -%}
                {%- do nodes.append(candidate) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}

    {%- set wanted = [] -%}
    {%- for candidate in nodes -%}
        {%- for constraint in candidate.constraints
            if constraint.type == 'foreign_key' and constraint.name -%}
            {%- do wanted.append((candidate, constraint)) -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- if not wanted -%}
        {{ return('') }}
    {%- endif -%}

    {%- set query -%}
        select relations.relname || '.' || constraints.conname as constraint_key
        from pg_constraint as constraints
        inner join pg_class as relations on constraints.conrelid = relations.oid
        inner join pg_namespace as namespaces on relations.relnamespace = namespaces.oid
        where constraints.contype = 'f'
            and namespaces.nspname in (
                {%- for schema in wanted | map(attribute=0) | map(attribute='schema') | unique -%}
                    '{{ schema }}'{{ ', ' if not loop.last }}
                {%- endfor -%}
            )
    {%- endset -%}
    {%- set present = run_query(query).columns[0].values() -%}

    {%- set statements = [] -%}
    {%- for candidate, constraint in wanted -%}
        {%- set referenced = resolve_constraint_to(constraint.to) -%}
        {%- if node is not none -%}
            {%- set relation = this -%}
        {%- else -%}
            {%- set relation = adapter.get_relation(
                database=candidate.database, schema=candidate.schema, identifier=candidate.alias
            ) -%}
        {%- endif -%}
        {%- if relation is not none and referenced is not none
            and (candidate.alias ~ '.' ~ constraint.name) not in present
            and (node is not none or foreign_key_holds(relation, constraint, referenced)) -%}
            {%- do statements.append((
                referenced | string,
                'alter table ' ~ relation ~ ' add constraint ' ~ constraint.name
                ~ ' foreign key (' ~ constraint.columns | join(', ') ~ ') references '
                ~ referenced ~ ' (' ~ constraint.to_columns | join(', ') ~ ')'
            )) -%}
        {%- endif -%}
    {%- endfor -%}
    {#- one global order of the referenced tables: concurrent builds cannot deadlock -#}
    {{ return(statements | sort(attribute=0) | map(attribute=1) | join(';\n')) }}
{% endmacro %}

{#- A constraint's `to` as a relation: compiled nodes have it rendered, the graph has "ref('x')". -#}
{% macro resolve_constraint_to(to) %}
    {%- set match = modules.re.match("^\\s*ref\\(\\s*['\"]([^'\"]+)['\"]\\s*\\)\\s*$", to) -%}
    {%- if not match -%}
        {{ return(to) }}
    {%- endif -%}
    {%- for node in graph.nodes.values() -%}
        {%- if node.resource_type == 'model' and node.name == match.group(1)
            and node.package_name == project_name -%}
            {%- set relation = adapter.get_relation(
                database=node.database, schema=node.schema, identifier=node.alias
            ) -%}
            {{ return(relation) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(none) }}
{% endmacro %}

{#- Whether every row of `relation` has its `constraint` (a foreign key) satisfied; warns if not. -#}
{% macro foreign_key_holds(relation, constraint, referenced) %}
    {%- set conditions = [] -%}
    {%- for column in constraint.columns -%}
        {%- do conditions.append(
            'parent.' ~ constraint.to_columns[loop.index0] ~ ' = child.' ~ column
        ) -%}
    {%- endfor -%}
    {%- set query -%}
        select count(*)
        from {{ relation }} as child
        where
            {% for column in constraint.columns -%}
                child.{{ column }} is not null and
            {% endfor -%}
            not exists (
                select 1 from {{ referenced }} as parent where {{ conditions | join(' and ') }}
            )
    {%- endset -%}
    {%- set broken = run_query(query).columns[0].values()[0] -%}
    {%- if broken > 0 -%}
        {%- do exceptions.warn(
            'foreign key ' ~ constraint.name ~ ' of ' ~ relation ~ ' not restored: '
            ~ broken ~ ' rows refer to rows no longer in ' ~ referenced
            ~ '; rebuild ' ~ relation.identifier ~ ' (dbt build -s ' ~ relation.identifier ~ ')'
        ) -%}
    {%- endif -%}
    {{ return(broken == 0) }}
{% endmacro %}
