{#-
    Genre labels: how a free-text `genres` value is split, keyed and named.

    - separators: the ones real data uses, "," ";" "/" "|" (with any spaces around them);
      "&" is not one ("R&B", "R & B" are one genre).
    - genre key: the label case-folded, "&" read as "and", every character that is not a
      letter or digit dropped: "Hip-Hop", "hip hop" and "HIPHOP" all give "hiphop", "R & B" and
      "r&b" give "randb". Labels match a known genre (or one of its aliases) by key.
    - genre slug: the same, with runs of other characters turned into "-": "Hip Hop" ->
      "hip-hop", "R&B" -> "r-and-b". The slug is the `genre_id` of a genre.
-#}

{% macro genre_separator_pattern() -%}
    '[,;/|]'
{%- endmacro %}

{% macro genre_key(label) -%}
    {{ regex_replace_all(
        "lower(replace(" ~ label ~ ", '&', ' and '))", non_alphanumeric_run_pattern(), "''"
    ) }}
{%- endmacro %}

{% macro genre_slug(label) -%}
    coalesce(
        nullif(
            btrim(
                {{ regex_replace_all(
                    "lower(replace(" ~ label ~ ", '&', ' and '))",
                    non_alphanumeric_run_pattern(),
                    "'-'"
                ) }},
                '-'
            ),
            ''
        ),
        'genre-' || left(md5({{ label }}), 8)
    )
{%- endmacro %}

{#- genre_key -> (genre_id, genre_name) of the known genres: their own names and the aliases. -#}
{% macro known_genre_keys() -%}
    select distinct
        {{ genre_key('spellings.spelling') }} as genre_key,
        known.genre_id,
        known.genre_name
    from (
        select genre_name as spelling, genre_name from {{ ref('genres') }}
        union all
        select alias as spelling, genre_name from {{ ref('genre_aliases') }}
    ) as spellings
    inner join {{ ref('genres') }} as known
        on spellings.genre_name = known.genre_name
{%- endmacro %}
