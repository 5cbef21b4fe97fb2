"""Word lists the demo grammar's slots draw from: days, months, names, rooms, devices, places...

Lower-case words and spaces only, so that every transcript stays within the grammar's
``ALLOWED_CHARACTERS``. Extend a list to widen the corpus; order matters for reproducibility
(a seed picks by position), so append rather than insert.
"""

from __future__ import annotations

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
NAMES = [
    "anna",
    "james",
    "maria",
    "david",
    "sarah",
    "peter",
    "lucy",
    "thomas",
    "emma",
    "jack",
    "olivia",
    "michael",
    "sophie",
    "daniel",
    "grace",
    "oliver",
    "chloe",
    "henry",
    "laura",
    "george",
    "hannah",
    "robert",
    "emily",
    "william",
]
CONTACTS = (*NAMES, "mum", "dad", "grandma", "grandpa", "the office", "the doctor", "my sister")
ROOMS = (
    "kitchen",
    "living room",
    "bedroom",
    "bathroom",
    "hallway",
    "garage",
    "office",
    "dining room",
    "basement",
    "garden",
    "nursery",
    "study",
)
DEVICES = (
    "lights",
    "heating",
    "fan",
    "television",
    "radio",
    "oven",
    "dishwasher",
    "washing machine",
    "coffee machine",
    "kettle",
    "air conditioning",
    "lamp",
)
OPENABLES = ("front door", "back door", "garage door", "window", "blinds", "curtains", "gate")
PLACES = (
    "london",
    "paris",
    "berlin",
    "madrid",
    "rome",
    "tokyo",
    "sydney",
    "toronto",
    "chicago",
    "boston",
    "dublin",
    "edinburgh",
    "manchester",
    "the airport",
    "the station",
    "the hospital",
    "the city centre",
    "the beach",
)
SHOPS = ("supermarket", "bakery", "pharmacy", "library", "post office", "bank", "gym", "museum")
ITEMS = (
    "milk",
    "bread",
    "eggs",
    "apples",
    "bananas",
    "coffee",
    "tea",
    "butter",
    "cheese",
    "rice",
    "pasta",
    "tomatoes",
    "onions",
    "potatoes",
    "chicken",
    "orange juice",
    "yoghurt",
    "carrots",
    "soap",
    "batteries",
)
MUSIC = (
    "some jazz",
    "rock music",
    "classical music",
    "the news",
    "some relaxing music",
    "my playlist",
    "the radio",
    "something upbeat",
    "the latest podcast",
)
TASKS = (
    "call the dentist",
    "take the bins out",
    "water the plants",
    "buy milk",
    "pick up the kids",
    "feed the cat",
    "walk the dog",
    "pay the rent",
    "check the oven",
    "send the report",
    "book a taxi",
    "charge my phone",
)
WEATHER = ("sunny", "windy", "cold", "warm", "cloudy", "hot", "foggy", "rainy")
WHEN = ("today", "tomorrow", "tonight", "this evening", "this weekend", "next week", "later")
PAST = ("today", "yesterday", "this morning", "last night", "last week")
ON_OFF = ("on", "off")
CURRENCIES = ("pounds", "dollars", "euros")
UNITS_OF_MEASURE = ("miles", "kilometres", "metres", "grams", "kilos", "points", "steps")
