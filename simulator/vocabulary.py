"""Fixed vocabularies of the MooVitamix contract: genres, genders, e-mail domains."""

from __future__ import annotations

GENRES: tuple[str, ...] = (
    "Rock",
    "Pop",
    "Hip Hop",
    "Jazz",
    "Electronic",
    "Classical",
    "Country",
    "Blues",
    "R&B",
    "Reggae",
    "Folk",
    "Metal",
    "Punk",
    "Funk",
    "Indie",
    "Alternative",
    "Techno",
)

# How common each genre is in the realistic profile (tracks and tastes), same order as GENRES.
GENRE_WEIGHTS: tuple[float, ...] = (
    13,  # Rock
    14,  # Pop
    12,  # Hip Hop
    5,  # Jazz
    9,  # Electronic
    4,  # Classical
    5,  # Country
    3,  # Blues
    6,  # R&B
    3,  # Reggae
    4,  # Folk
    5,  # Metal
    3,  # Punk
    3,  # Funk
    7,  # Indie
    6,  # Alternative
    4,  # Techno
)

# Spellings that real catalogues use for the same genre (realistic profile, a small fraction).
GENRE_VARIANTS: dict[str, tuple[str, ...]] = {
    "Rock": ("rock", "ROCK"),
    "Pop": ("pop", "POP"),
    "Hip Hop": ("hip-hop", "Hip-Hop", "hip hop", "HipHop", "hiphop"),
    "Jazz": ("jazz",),
    "Electronic": ("electronic", "ELECTRONIC"),
    "Classical": ("classical",),
    "Country": ("country",),
    "Blues": ("blues",),
    "R&B": ("rnb", "RnB", "R & B", "r&b", "R&b"),
    "Reggae": ("reggae",),
    "Folk": ("folk",),
    "Metal": ("metal", "METAL"),
    "Punk": ("punk",),
    "Funk": ("funk",),
    "Indie": ("indie",),
    "Alternative": ("alternative",),
    "Techno": ("techno",),
}

# Separators between genres: the canonical one first, the ones real data also uses after it.
GENRE_SEPARATORS: tuple[str, ...] = (", ", ";", "/", "|", " / ", "; ")

GENDERS: tuple[str, ...] = (
    "Male",
    "Female",
    "Non-binary",
    "Genderqueer",
    "Genderfluid",
    "Agender",
    "Bigender",
    "Gender questioning",
    "Gender nonconforming",
)

# Realistic profile: most users pick one of the first two.
GENDER_WEIGHTS: tuple[float, ...] = (46, 46, 2.5, 1, 1, 1, 0.5, 1, 1)

EMAIL_DOMAINS: tuple[str, ...] = ("example.com", "example.org", "example.net")
