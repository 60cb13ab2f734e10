{#-
    Seconds of a duration served as "MM:SS" (minutes may have 1-4 digits) or "H:MM:SS";
    null for anything else (empty, "abc", "12:75", "-1:00"), never an error.
-#}
{% macro parse_duration_seconds(expression) -%}
    case
        when {{ regex_matches('btrim(' ~ expression ~ ')', "'^[0-9]{1,4}:[0-5][0-9]$'") }}
            then
                cast({{ dbt.split_part('btrim(' ~ expression ~ ')', "':'", 1) }} as integer) * 60
                + cast({{ dbt.split_part('btrim(' ~ expression ~ ')', "':'", 2) }} as integer)
        when {{ regex_matches('btrim(' ~ expression ~ ')', "'^[0-9]{1,3}:[0-5][0-9]:[0-5][0-9]$'") }}
            then
                cast({{ dbt.split_part('btrim(' ~ expression ~ ')', "':'", 1) }} as integer) * 3600
                + cast({{ dbt.split_part('btrim(' ~ expression ~ ')', "':'", 2) }} as integer) * 60
                + cast({{ dbt.split_part('btrim(' ~ expression ~ ')', "':'", 3) }} as integer)
    end
{%- endmacro %}
