"""Write the demo's inputs for DRIN: entities.jsonl (name, short description, image key) and image_captions.jsonl.

The demo has no images. Every image, a mention's news photo or an entity's Wikipedia picture, is represented by a
written caption ("a footballer celebrating a goal in front of fans"); make_image_features.py turns the captions
into vectors. Everything here is a pure function of entities.txt and the splits (stdlib only, SHA-256 for every
choice), so reruns write the same bytes.

- Category: entities.txt is grouped by category in contiguous line ranges (RANGES), refined by name (KIND_BY_NAME).
- Description: a short Wikipedia-style brief. An explicit one (DESCRIPTIONS) where the category phrase would be
  wrong or too vague, else the category's template filled from small tables (nationality, location, office, year).
  Templates only say what is true of every member of the category.
- Entity image: demo/entity_<line number>.jpg, one caption variant of its category; about 5 % of the entities
  (by hash of the name) have no image, as in the real data.
- Mention image (every img_url of the splits): a caption of the gold entity's category, another variant than the
  entity's own picture where there is one; 20 % of them (by hash of the key) an uninformative caption instead,
  because news photos often do not show the entity. NIL lines get an uninformative or a random category's caption.

Usage:  python data/demo/make_drin_data.py [--data_dir data/demo]
"""
import argparse
import hashlib
import json
import os

SPLITS = ("train", "dev", "test")
NO_IMAGE_PERCENT = 5
UNINFORMATIVE_PERCENT = 20


def digest(*parts):
    """A stable integer from strings (SHA-256), the only source of 'randomness' here."""
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[:8], "big")


def pick(options, *parts):
    return options[digest(*parts) % len(options)]


def groups(text):
    """'value: name | name | ...' lines -> {name: value}; a value may span several lines."""
    table = {}
    for line in text.strip().splitlines():
        value, _, names = line.partition(":")
        for name in (n.strip() for n in names.split("|")):
            if table.setdefault(name, value.strip()) != value.strip():
                raise ValueError(f"{name!r} is listed under {table[name]!r} and {value.strip()!r}")
    return table


def pairs(text):
    """'name | value' lines -> {name: value}."""
    rows = [[part.strip() for part in line.split(" | ", 1)] for line in text.strip().splitlines()]
    table = dict(rows)
    if len(table) != len(rows):
        raise ValueError("a name is listed twice")
    return table


# ----------------------------------------------------------------------------- captions, per category

_MUSIC = ["a singer performing on stage with a microphone", "a musician playing guitar at a concert",
          "a pop star on stage under bright coloured lights", "an album cover with a portrait of the artist"]
CAPTIONS = {
    "country": ["a map of a country with its national flag", "the national flag waving on a pole",
                "a national flag flying over a government building", "a country highlighted on a globe"],
    "island": ["an island seen from the air surrounded by sea", "a rocky coastline with cliffs and beaches",
               "a map of an island with its towns marked"],
    "region": ["a map of a region with its borders highlighted", "a rural landscape with fields and villages",
               "a regional flag flying beside a road sign"],
    "world_region": ["a world map with one region highlighted", "a satellite image of a large landmass",
                     "a map showing the borders of several countries"],
    "us_state": ["a map of a U.S. state with its state flag", "a road sign welcoming drivers to the state",
                 "the state capitol building with a dome", "a scenic highway through the state's countryside"],
    "city": ["the skyline of a city at dusk", "a busy street in the city centre", "an aerial view of a city with a river",
             "a city square with old buildings and tourists"],
    "ancient_city": ["ruins of an ancient city under a blue sky", "an archaeological excavation of ancient stone walls",
                     "ancient columns and ruins visited by tourists"],
    "district": ["a neighbourhood street with shops and apartment buildings", "an aerial view of a city district",
                 "pedestrians and yellow taxis on a big city street"],
    "politician": ["a politician speaking at a podium with flags behind", "a politician shaking hands with supporters",
                   "an official portrait of a politician in a suit", "a politician giving a speech at a rally"],
    "royal": ["a portrait of a monarch wearing a crown", "a royal waving from a palace balcony",
              "a royal procession with a horse-drawn carriage"],
    "ruler": ["a marble bust of a historical ruler", "an old painting of a ruler in ceremonial dress",
              "a statue of a historical leader on a plinth", "an old coin showing a ruler's profile"],
    "military": ["a historical portrait painting of a commander in uniform", "a bronze statue of a military commander",
                 "a painting of a battle with soldiers and cannons"],
    "religious_leader": ["a religious leader in white robes blessing a crowd",
                         "a religious leader speaking from a balcony to pilgrims", "pilgrims gathered in a great square"],
    "religious_figure": ["a religious painting of a robed figure", "a stained-glass window in a place of worship",
                         "a religious manuscript with ornate calligraphy"],
    "basketball_player": ["a basketball player dunking during a game", "portrait of a basketball player in uniform",
                          "a basketball player dribbling past a defender", "a basketball player shooting a jump shot"],
    "basketball_coach": ["a basketball coach shouting instructions from the sideline",
                         "a coach holding a championship trophy", "a coach drawing a play on a whiteboard"],
    "footballer": ["a footballer celebrating a goal in front of fans", "a footballer dribbling the ball past a defender",
                   "portrait of a footballer in club kit", "a footballer taking a free kick"],
    "football_manager": ["a football manager gesturing on the touchline", "a football manager watching from the dugout",
                         "a football manager lifting a trophy with his players"],
    "tennis_player": ["a tennis player serving on a grass court", "a tennis player hitting a backhand",
                      "a tennis player lifting a trophy on centre court"],
    "golfer": ["a golfer swinging a club on a green fairway", "a golfer lining up a putt on the green",
               "a golfer in a green jacket holding a trophy"],
    "runner": ["a sprinter crossing the finish line on a running track", "athletes running on a stadium track",
               "a runner celebrating with a national flag"],
    "boxer": ["a boxer throwing a punch in the ring", "a boxer with gloves raised in celebration",
              "two boxers facing each other before a fight"],
    "swimmer": ["a swimmer racing in an Olympic pool", "a swimmer diving from the starting block",
                "a swimmer with gold medals around the neck"],
    "gymnast": ["a gymnast performing on the balance beam", "a gymnast in mid-air during a floor routine",
                "a gymnast on the podium with a medal"],
    "racing_driver": ["a racing driver in a helmet and fireproof suit", "a racing driver spraying champagne on the podium",
                      "a racing car speeding round a corner of a circuit"],
    "quarterback": ["a quarterback throwing a pass in an American football game",
                    "an American football player in helmet and pads", "a quarterback holding a championship trophy"],
    "baseball_player": ["a baseball player swinging a bat at home plate", "a baseball pitcher throwing from the mound",
                        "a baseball player rounding the bases"],
    "hockey_player": ["an ice hockey player skating with the puck", "hockey players battling in front of the goal",
                      "an ice hockey player raising a trophy"],
    "cricketer": ["a cricketer batting at the crease", "a cricket bowler running in to bowl",
                  "a cricketer raising his bat to the crowd"],
    "cyclist": ["a cyclist racing on a mountain road", "a peloton of road cyclists on a country road",
                "a cyclist in a yellow jersey on the podium"],
    "musician": _MUSIC,
    "rapper": _MUSIC,
    "classical": ["an orchestra performing in a concert hall", "a page of handwritten sheet music",
                  "a grand piano on a concert stage", "an old painted portrait of a composer"],
    "actor": ["an actor on the red carpet at a film premiere", "a film still of an actor in a dramatic scene",
              "a headshot of an actor smiling", "an actor holding an award statuette"],
    "media_personality": ["a television host on a studio set", "a celebrity posing for photographers at an event",
                          "a celebrity smiling on a magazine cover"],
    "director": ["a film director behind a camera on a film set", "a director giving instructions to actors on set",
                 "a director's chair on a movie set"],
    "scientist": ["a scientist working in a laboratory", "a black-and-white portrait of a scientist",
                  "a blackboard covered in equations", "a scientist looking through a microscope"],
    "ancient_greek": ["a marble bust of an ancient Greek thinker", "an ancient scroll with geometric diagrams",
                      "a classical fresco of philosophers in debate"],
    "painter": ["a painting hanging in a museum gallery", "a self-portrait of a painter",
                "an artist's easel and palette in a studio"],
    "writer": ["an old book with the writer's portrait on the cover", "a writer at a desk with a typewriter",
               "a shelf of classic novels in a library", "a handwritten manuscript page"],
    "philosopher": ["a portrait of a philosopher holding a book", "a statue of a philosopher in a university courtyard",
                    "an old printed treatise on philosophy"],
    "astronaut": ["an astronaut in a spacesuit on the Moon", "an astronaut floating inside a spacecraft",
                  "an astronaut in a white spacesuit before launch"],
    "businessperson": ["a business executive speaking on stage at a tech conference",
                       "a portrait of a businessman in a suit", "a chief executive presenting a new product"],
    "explorer": ["an old map with a sailing ship", "a painting of a sailing ship on the ocean",
                 "a statue of an explorer pointing towards the sea"],
    "football_club": ["the crest of a football club", "a football team posing on the pitch before a match",
                      "a stadium full of fans in club colours", "football players celebrating a trophy win"],
    "basketball_team": ["a basketball team huddling on the court", "the logo of a basketball team on the court floor",
                        "fans cheering in a basketball arena"],
    "nfl_team": ["an American football team running onto the field", "a football helmet with a team logo",
                 "fans in a packed American football stadium"],
    "baseball_team": ["a baseball team celebrating on the field", "a baseball stadium on a sunny afternoon",
                      "a baseball cap with a team logo"],
    "hockey_team": ["an ice hockey team celebrating on the ice", "a hockey arena with fans around the rink",
                    "an ice hockey jersey with a team crest"],
    "racing_team": ["a Formula One car in team colours on track", "mechanics performing a pit stop",
                    "a racing team's garage in the pit lane"],
    "company": ["the headquarters building of a company with its logo", "a company logo on a glass office tower",
                "employees working in a modern open-plan office", "a shop front with a brand logo"],
    "tech_company": ["a smartphone showing an app's home screen", "the logo of a technology company at its campus",
                     "a keynote stage at a developer conference", "a laptop displaying a website"],
    "car_maker": ["a new car model on display at a motor show", "a car factory assembly line",
                  "the brand's badge on the front grille of a car", "a sports car driving on a coastal road"],
    "aerospace": ["a passenger jet on the runway", "an aircraft assembly hangar", "a rocket engine on a test stand"],
    "airline": ["an airliner in airline livery taking off", "airline check-in desks at an airport",
                "cabin crew in uniform beside an airliner"],
    "bank": ["a bank's headquarters in a financial district", "a trading floor with screens of stock prices",
             "a bank logo over a branch entrance"],
    "oil": ["an offshore oil platform at sea", "a petrol station with a company logo", "an oil refinery at night"],
    "film_studio": ["a film studio lot with a large gate", "a film studio logo on a cinema screen",
                    "a sound stage with cameras and lights"],
    "video_games": ["a video game console and controller", "a screenshot of a colourful video game",
                    "players at a video game convention"],
    "fashion": ["a luxury boutique with handbags in the window", "a fashion show runway with models",
                "a designer handbag with a monogram logo"],
    "food_drink": ["a can of a soft drink on a table", "a fast food restaurant counter",
                   "bottles of drinks on a supermarket shelf"],
    "sportswear": ["running shoes with a brand logo on display", "athletes wearing branded sportswear",
                   "a sportswear store with shirts on racks"],
    "retail": ["the entrance of a large retail store", "shoppers with trolleys in a store aisle",
               "a shopping bag with a retailer's logo"],
    "pharma": ["a laboratory producing vaccines", "boxes of medicine on a pharmacy shelf",
               "a scientist holding a vial of vaccine"],
    "river": ["a wide river flowing through a valley", "boats on a broad river at sunset",
              "an aerial view of a winding river", "a bridge crossing a river"],
    "rainforest": ["dense green tropical rainforest canopy seen from above", "a river winding through a tropical forest",
                   "tall trees and vines in a humid jungle"],
    "mountain": ["a snow-capped mountain peak under a blue sky", "climbers on a steep mountain ridge",
                 "a mountain reflected in a lake"],
    "mountain_range": ["a chain of snowy peaks seen from the air", "a valley surrounded by mountains",
                       "a hiking trail across a mountain range"],
    "desert": ["sand dunes stretching to the horizon", "a camel caravan crossing a desert", "a dry rocky desert plain"],
    "canyon": ["a deep canyon with layered red rock walls", "a river at the bottom of a canyon",
               "tourists at a viewpoint above a canyon"],
    "waterfall": ["a huge waterfall with mist and a rainbow", "tourists on a boat below a waterfall",
                  "a wide curtain of falling water"],
    "lake": ["a calm lake surrounded by hills", "a lakeshore with boats and a pier", "a large lake seen from above"],
    "sea": ["a calm blue sea under a clear sky", "waves breaking on a rocky coast", "a ship sailing on the open sea"],
    "ocean": ["open ocean waves seen from a ship", "a satellite view of an ocean", "a deep blue ocean horizon"],
    "coral_reef": ["a colourful coral reef with tropical fish", "an aerial view of a reef in turquoise water",
                   "a diver swimming over corals"],
    "national_park": ["a scenic view of a protected natural park", "wild animals in a national park landscape",
                      "a park ranger sign at a trail entrance"],
    "landmark": ["a famous landmark photographed by tourists", "a historic monument lit up at night",
                 "a postcard view of a landmark building", "crowds of visitors in front of a famous monument"],
    "stadium": ["a packed stadium during a match", "an aerial view of a stadium",
                "the exterior of a stadium with its name on the facade"],
    "airport": ["airliners parked at an airport terminal", "a busy airport departures hall",
                "a plane landing on an airport runway"],
    "museum": ["visitors looking at exhibits in a museum hall", "the grand entrance of a museum building",
               "a gallery with paintings on the walls"],
    "band": ["a rock band performing on stage", "a band posing for a promotional photo",
             "a crowd at an outdoor music festival in front of a stage", "a vinyl record sleeve with the band's name"],
    "film": ["a film poster with the title and actors", "a still frame from a movie scene",
             "a cinema screen showing a film", "actors filming a scene on a movie set"],
    "tv_series": ["a television series title card", "a family watching a TV show on the sofa",
                  "cast members of a TV series on set"],
    "musical": ["a theatre stage during a musical performance", "a theatre marquee with the musical's name",
                "singers and dancers in costume on stage"],
    "comics": ["a comic book cover with a masked superhero", "a superhero costume on display",
               "a comic strip page with speech bubbles"],
    "book": ["an old hardback book on a wooden table", "a book cover with an illustrated title",
             "the pages of an open book"],
    "play": ["actors performing a play on a theatre stage", "a theatre programme for a classic play",
             "an actor holding a skull on stage"],
    "religious_text": ["an open holy book with ornate lettering", "an old illuminated manuscript",
                       "a worshipper reading a sacred text"],
    "painting": ["a famous painting in a gilded frame", "museum visitors photographing a painting",
                 "a close-up of brushstrokes on a canvas"],
    "song": ["a vinyl single record sleeve", "a music video still of a band performing",
             "a chart listing the top songs of the week"],
    "album": ["an album cover on a vinyl record sleeve", "a record spinning on a turntable",
              "a music shop shelf of albums"],
    "intl_org": ["delegates seated at a large international conference table",
                 "the flags of member states outside a headquarters", "the logo of an international organisation on a building"],
    "agency": ["the seal of a government agency on a building wall", "the headquarters of a government agency",
               "officials in suits walking into a government building"],
    "legislature": ["a parliament chamber during a debate", "lawmakers voting in a legislative chamber",
                    "the facade of a parliament building"],
    "court": ["the columned facade of a supreme court building", "judges in black robes seated at a bench",
              "a gavel on a judge's desk"],
    "central_bank": ["a central bank building with stone columns", "banknotes and coins of a currency",
                     "a central bank governor announcing interest rates"],
    "space_agency": ["a space agency logo on a rocket", "engineers in a mission control room",
                     "a rocket on the launch pad at dawn"],
    "news": ["a newsroom with journalists at desks", "a television news studio with presenters",
             "the front page of a daily newspaper"],
    "website": ["a web browser showing an online encyclopedia article", "a laptop open on an encyclopedia page",
                "a smartphone screen with a web page"],
    "university": ["a historic university campus with students", "graduates throwing caps at a ceremony",
                   "a university library reading room"],
    "publisher": ["a stack of academic books with a publisher's logo", "a printing press producing books",
                  "a bookshop shelf of academic titles"],
    "militant": ["armed fighters standing beside a pickup truck", "a militant group's flag at a rally",
                 "masked gunmen in a dusty street"],
    "party": ["supporters waving party flags at a rally", "a party convention hall with banners",
              "campaign posters of a political party"],
    "award": ["a winner holding a golden award on stage", "an award ceremony with guests in evening dress",
              "a red carpet at a film festival"],
    "league": ["a league logo at the centre of a playing field", "a sports league trophy on display",
               "players from two teams lining up before a game"],
    "football_event": ["football fans with flags in a stadium", "a captain lifting a football trophy",
                       "two football teams playing a match in a packed stadium"],
    "olympics": ["the Olympic rings at a stadium", "athletes parading at an opening ceremony",
                 "an Olympic torch being lit"],
    "american_football_event": ["confetti falling on a championship American football team",
                                "a packed stadium during an American football final"],
    "basketball_event": ["a basketball team celebrating a championship", "a packed arena during a basketball final"],
    "baseball_event": ["a baseball team celebrating a championship on the field", "a packed ballpark during a final"],
    "hockey_event": ["hockey players lifting a large silver cup", "a packed arena during an ice hockey final"],
    "tennis_event": ["a tennis match on a packed centre court", "a tennis champion lifting a trophy",
                     "spectators watching tennis on a sunny day"],
    "cycling_event": ["a peloton racing through a mountain pass", "a cyclist in the leader's jersey on the podium"],
    "motor_race": ["racing cars on a street circuit", "a racing car crossing the finish line under a chequered flag",
                   "a pit stop during a motor race"],
    "marathon": ["thousands of runners at the start of a marathon", "a runner crossing a marathon finish line"],
    "golf_event": ["a golfer on the final green watched by a crowd", "a golf trophy on a table by the eighteenth hole"],
    "rugby_event": ["rugby players in a scrum", "a rugby captain lifting a trophy"],
    "cricket_event": ["a cricket match in a packed stadium", "cricketers celebrating a wicket"],
    "war": ["soldiers and tanks on a battlefield", "a war memorial with names engraved",
            "an archive photograph of troops marching"],
    "history": ["an archive photograph in a museum exhibition", "a historical painting of a crowd",
                "an old engraving in a history book", "a memorial with flowers laid at its base"],
    "political_event": ["protesters holding placards outside a parliament", "politicians at a tense press briefing",
                        "newspaper headlines about a political crisis"],
    "disaster": ["rescue workers among ruins after a disaster", "an abandoned town after a disaster",
                 "smoke rising over a city skyline"],
    "pandemic": ["medical staff in protective suits in a hospital ward", "people wearing face masks in a street",
                 "a scientist looking at a virus under a microscope"],
    "document": ["an old handwritten document with seals", "leaders signing a treaty at a table",
                 "a parchment document displayed under glass"],
    "space_mission": ["a rocket lifting off from a launch pad", "an astronaut standing on the surface of the Moon",
                      "a mission control room with rows of consoles"],
    "spacecraft": ["a satellite orbiting above the Earth", "a space telescope with solar panels in orbit",
                   "a spacecraft against the black of space"],
    "planet": ["a planet seen from space against a black sky", "a telescope image of a planet",
               "an illustration of the planets of the solar system"],
    "astronomy": ["a night sky full of stars", "a telescope image of a bright celestial object",
                  "an observatory dome under the stars"],
    "element": ["a drop of liquid silver metal", "a periodic table with one element highlighted",
                "a glass vial of a chemical element"],
    "myth": ["a marble statue of a mythological figure", "an ancient Greek vase painted with gods and heroes",
             "a classical painting of a scene from mythology"],
    "cartoon": ["a cartoon dog character", "a still from an animated cartoon", "a plush toy of a cartoon character"],
    "fruit": ["a fresh fruit on a kitchen table", "fruit hanging from a branch in an orchard",
              "a basket of ripe fruit at a market"],
    "animal": ["a wild animal in its natural habitat", "a close-up of an animal's face", "an animal running across a field"],
    "programming_language": ["lines of source code on a computer screen", "a programming book with code examples",
                             "a programmer typing code on a laptop"],
    "comedy_group": ["comedians performing a sketch on stage", "a comedy troupe in costume on a TV set",
                     "an audience laughing in a theatre"],
    "people": ["a historical reenactment of an ancient people", "ancient artefacts of a people in a museum case",
               "a reconstructed ancient village"],
    "religion_concept": ["a Buddhist monk meditating in a temple", "a statue of the Buddha",
                         "candles and incense in a temple"],
}

# What a news photo often shows instead of the entity.
UNINFORMATIVE = ["a crowd of people in a street", "a blurry photo of a press conference room",
                 "a newspaper page with a headline", "a close-up of a microphone", "an empty office with desks and chairs",
                 "a city street on a rainy day", "people walking past a shop window",
                 "a group of people talking at a table", "a television screen showing a news broadcast",
                 "a hand holding a smartphone"]

# ----------------------------------------------------------------------------- descriptions, per category
# A template's {field} is filled from the tables below; among the templates whose fields are all known, those using
# the most fields win (an office beats nationality alone), one picked by hash of the name.

TEMPLATES = {
    "country": ["country in {loc}"], "us_state": ["state of the United States", "state in the {loc} United States"],
    "city": ["city in {loc}"], "politician": ["{nat} politician", "{nat} politician, {office}"],
    "basketball_player": ["{nat} professional basketball player", "{nat} basketball player"],
    "basketball_coach": ["{nat} basketball coach and former player"],
    "footballer": ["{nat} footballer", "{nat} professional footballer"], "football_manager": ["{nat} football manager"],
    "tennis_player": ["{nat} tennis player", "{nat} professional tennis player"],
    "golfer": ["{nat} professional golfer"], "runner": ["{nat} track and field athlete"],
    "boxer": ["{nat} professional boxer"], "swimmer": ["{nat} competitive swimmer"], "gymnast": ["{nat} artistic gymnast"],
    "racing_driver": ["{nat} racing driver", "{nat} Formula One racing driver"],
    "quarterback": ["American football quarterback in the NFL"],
    "baseball_player": ["{nat} professional baseball player"], "hockey_player": ["{nat} professional ice hockey player"],
    "cricketer": ["{nat} cricketer", "{nat} international cricketer"], "cyclist": ["{nat} road racing cyclist"],
    "musician": ["{nat} singer", "{nat} singer and recording artist"], "rapper": ["{nat} rapper", "{nat} rapper and recording artist"],
    "actor": ["{nat} actor", "{nat} film actor"], "director": ["{nat} film director", "{nat} filmmaker"],
    "painter": ["{nat} painter"], "writer": ["{nat} writer", "{nat} author"], "philosopher": ["{nat} philosopher"],
    "astronaut": ["{nat} astronaut"], "businessperson": ["{nat} businessman", "{nat} business executive"],
    "football_club": ["{nat} professional football club", "{nat} association football club"],
    "basketball_team": ["{nat} professional basketball team"], "nfl_team": ["professional American football team in the NFL"],
    "baseball_team": ["{nat} professional baseball team"], "hockey_team": ["{nat} professional ice hockey team"],
    "tech_company": ["{nat} technology company", "{nat} multinational technology company"],
    "car_maker": ["{nat} automobile manufacturer", "{nat} car manufacturer"], "aerospace": ["{nat} aerospace company"],
    "airline": ["{nat} airline", "{nat} passenger airline"], "bank": ["{nat} financial services company"],
    "oil": ["{nat} oil and gas company"], "film_studio": ["{nat} film studio"], "video_games": ["{nat} video game company"],
    "fashion": ["{nat} luxury fashion house"], "sportswear": ["{nat} sportswear company"], "retail": ["{nat} retail company"],
    "pharma": ["{nat} pharmaceutical company"], "river": ["river in {loc}", "river flowing through {loc}"],
    "mountain_range": ["mountain range in {loc}"], "band": ["{nat} band", "{nat} music group"],
    "film": ["{year} film", "{year} feature film"], "university": ["research university in {loc}", "university in {loc}"],
    "airport": ["international airport serving {loc}"],
}

# 1-based inclusive line ranges of entities.txt; a later range overrides an earlier one.
RANGES = [
    (1, 197, "country"), (198, 241, "region"), (242, 255, "world_region"), (256, 305, "us_state"), (306, 600, "city"),
    (521, 525, "ancient_city"), (601, 603, "district"), (604, 719, "politician"), (720, 729, "ruler"),
    (730, 752, "basketball_player"), (753, 753, "basketball_coach"), (754, 816, "footballer"),
    (817, 822, "football_manager"), (823, 840, "tennis_player"), (873, 954, "musician"), (933, 937, "classical"),
    (955, 1041, "actor"), (1042, 1062, "director"), (1063, 1092, "scientist"), (1093, 1098, "ancient_greek"),
    (1099, 1109, "painter"), (1110, 1128, "writer"), (1129, 1132, "philosopher"), (1133, 1135, "religious_figure"),
    (1136, 1138, "astronaut"), (1139, 1157, "businessperson"), (1158, 1159, "explorer"), (1160, 1239, "football_club"),
    (1240, 1269, "basketball_team"), (1270, 1300, "nfl_team"), (1301, 1315, "baseball_team"),
    (1316, 1329, "hockey_team"), (1330, 1333, "racing_team"), (1334, 1486, "company"), (1356, 1379, "car_maker"),
    (1380, 1382, "aerospace"), (1417, 1430, "bank"), (1431, 1437, "oil"), (1438, 1444, "film_studio"),
    (1445, 1448, "video_games"), (1463, 1470, "fashion"), (1471, 1480, "airline"), (1487, 1520, "river"),
    (1488, 1488, "rainforest"), (1521, 1537, "mountain"), (1538, 1545, "mountain_range"), (1546, 1547, "desert"),
    (1548, 1548, "canyon"), (1549, 1550, "waterfall"), (1551, 1557, "lake"), (1558, 1564, "sea"), (1565, 1568, "ocean"),
    (1569, 1569, "coral_reef"), (1570, 1571, "national_park"), (1572, 1601, "landmark"), (1602, 1609, "stadium"),
    (1610, 1612, "district"), (1613, 1613, "landmark"), (1614, 1614, "space_mission"), (1615, 1617, "airport"),
    (1618, 1620, "museum"), (1621, 1717, "band"), (1718, 1767, "film"), (1768, 1779, "tv_series"),
    (1780, 1780, "musical"), (1781, 1781, "tv_series"), (1782, 1800, "book"), (1801, 1802, "painting"),
    (1803, 1804, "song"), (1805, 1806, "album"), (1807, 1828, "intl_org"), (1829, 1843, "agency"), (1844, 1852, "news"),
    (1853, 1853, "website"), (1854, 1875, "university"), (1876, 1880, "militant"), (1881, 1889, "party"),
    (1890, 1897, "award"), (1898, 1902, "league"), (1903, 1921, "football_event"), (1922, 1931, "olympics"),
    (1936, 1939, "tennis_event"), (1954, 1981, "history"), (1982, 1986, "document"), (1987, 1989, "space_mission"),
    (1990, 1992, "spacecraft"), (1993, 2013, "astronomy"), (2014, 2024, "myth"),
    # 841-872 (other athletes), 1932-1953 (other sports events) and 2025-2039 are given by name below
]

KIND_BY_NAME = groups("""
district: Tottenham | Chelsea, London
royal: Elizabeth II | Charles III | Diana, Princess of Wales | Queen Victoria | Henry VIII
military: Horatio Nelson, 1st Viscount Nelson | Arthur Wellesley, 1st Duke of Wellington | Francis Drake | Napoleon
religious_leader: Pope Francis | Pope John Paul II | Pope Benedict XVI
musician: Victoria Beckham
golfer: Tiger Woods | Jack Nicklaus | Rory McIlroy
runner: Usain Bolt | Carl Lewis | Jesse Owens | Mo Farah | Eliud Kipchoge
boxer: Muhammad Ali | Mike Tyson | Manny Pacquiao
swimmer: Michael Phelps
gymnast: Simone Biles
racing_driver: Lewis Hamilton | Michael Schumacher | Max Verstappen | Ayrton Senna | Fernando Alonso | Sebastian Vettel
quarterback: Tom Brady | Peyton Manning | Joe Montana
baseball_player: Babe Ruth | Derek Jeter | Shohei Ohtani
hockey_player: Wayne Gretzky
cricketer: Sachin Tendulkar | Virat Kohli | Don Bradman
cyclist: Lance Armstrong | Eddy Merckx | Tadej Pogačar
rapper: Jay-Z | Drake (musician) | Kanye West | Eminem | Kendrick Lamar | Snoop Dogg | Tupac Shakur | Bad Bunny
media_personality: Oprah Winfrey | Paris Hilton | Kim Kardashian
fashion: Coco Chanel
car_maker: Ferrari | Tesla, Inc. | Ford Mustang
aerospace: Rolls-Royce Holdings | SpaceX
tech_company: Apple Inc. | Amazon (company) | Microsoft | Google | Alphabet Inc. | Meta Platforms | Facebook | Instagram
tech_company: WhatsApp | YouTube | Twitter | Netflix | Nvidia | Intel | IBM | Oracle Corporation | Samsung Electronics | Sony
tech_company: Nokia | Ericsson | Huawei | Xiaomi | Alibaba Group | Tencent | Baidu | ByteDance | TikTok | Uber | Airbnb
tech_company: PayPal | Spotify | OpenAI | Anthropic | Adobe Inc. | Salesforce | Dell | HP Inc. | Lenovo | Qualcomm | TSMC
tech_company: BlackBerry Limited
food_drink: The Coca-Cola Company | Coca-Cola | PepsiCo | McDonald's | Starbucks | Red Bull | Heineken | Guinness
food_drink: Mars, Incorporated | Subway (restaurant) | Nestlé
sportswear: Nike, Inc. | Adidas | Puma (brand)
retail: Walmart | Target Corporation | Costco | IKEA | H&M
pharma: Johnson & Johnson | Pfizer | Moderna | AstraZeneca | Bayer
landmark: Mount Rushmore
comics: Batman
film: Indiana Jones | Star Wars | James Bond
book: Harry Potter
play: Hamlet | Macbeth | Romeo and Juliet
religious_text: Bible | Quran | Book of Genesis
legislature: United States Congress | United States Senate | Bundestag | House of Commons of the United Kingdom
legislature: European Parliament
court: Supreme Court of the United States
central_bank: European Central Bank | Federal Reserve | Bank of England
space_agency: NASA | European Space Agency
publisher: Oxford University Press
american_football_event: Super Bowl
basketball_event: NBA Finals
baseball_event: World Series
hockey_event: Stanley Cup
cycling_event: Tour de France | Giro d'Italia
motor_race: Monaco Grand Prix | Formula One | Indianapolis 500 | 24 Hours of Le Mans
marathon: Boston Marathon | London Marathon
golf_event: Masters Tournament | Ryder Cup
rugby_event: Rugby World Cup | Six Nations Championship
cricket_event: Cricket World Cup | The Ashes
war: World War I | World War II | American Civil War | American Revolutionary War | Vietnam War | Korean War
war: Iraq War | Gulf War | Battle of Waterloo | Normandy landings | Russian invasion of Ukraine
political_event: Brexit | Watergate scandal | Cuban Missile Crisis | 2008 financial crisis
disaster: September 11 attacks | Chernobyl disaster
pandemic: COVID-19 pandemic | Black Death | Spanish flu
planet: Mercury (planet) | Venus | Earth | Mars | Jupiter | Saturn | Uranus | Neptune | Pluto
element: Mercury (element)
myth: Mercury (mythology) | Venus (mythology) | Mars (mythology) | Jupiter (mythology) | Saturn (mythology)
myth: Neptune (mythology) | Amazons
cartoon: Pluto (Disney)
fruit: Apple | Blackberry
animal: Jaguar | Cougar | Turkey (bird) | Mustang
programming_language: Python (programming language) | Java (programming language)
comedy_group: Monty Python
people: Vikings | Celts
religion_concept: Nirvana
""")

# Nationality by range (teams; people where most of a range shares it), then by name (overrides the range).
NAT_RANGES = [
    (730, 753, "American"), (873, 954, "American"), (955, 1041, "American"), (1042, 1062, "American"),
    (1139, 1157, "American"), (1160, 1185, "English"), (1186, 1190, "Scottish"), (1191, 1197, "Spanish"),
    (1198, 1206, "German"), (1207, 1214, "Italian"), (1215, 1217, "French"), (1218, 1220, "Dutch"),
    (1221, 1223, "Portuguese"), (1224, 1225, "Belgian"), (1226, 1227, "Swiss"), (1228, 1228, "Serbian"),
    (1229, 1229, "Croatian"), (1230, 1231, "Ukrainian"), (1232, 1232, "Russian"), (1233, 1233, "Czech"),
    (1234, 1234, "Greek"), (1235, 1236, "Argentine"), (1237, 1237, "Brazilian"), (1238, 1239, "American"),
    (1240, 1269, "American"), (1301, 1329, "American"),
]
NATIONALITY = groups("""
American: Barack Obama | Joe Biden | Donald Trump | Kamala Harris | Hillary Clinton | Bill Clinton | George W. Bush
American: George H. W. Bush | Ronald Reagan | Jimmy Carter | Richard Nixon | Gerald Ford | Lyndon B. Johnson
American: John F. Kennedy | Robert F. Kennedy | Dwight D. Eisenhower | Harry S. Truman | Franklin D. Roosevelt
American: Theodore Roosevelt | Woodrow Wilson | Abraham Lincoln | George Washington | Thomas Jefferson | John Adams
American: James Madison | James Monroe | Andrew Jackson | Ulysses S. Grant | Grover Cleveland | Alexander Hamilton
American: Sam Houston | Bernie Sanders | Nancy Pelosi | Mike Pence | Al Gore | John McCain | Mitt Romney
American: Serena Williams | Venus Williams | Pete Sampras | Andre Agassi | John McEnroe | Tiger Woods | Jack Nicklaus
American: Carl Lewis | Jesse Owens | Muhammad Ali | Mike Tyson | Michael Phelps | Simone Biles | Babe Ruth | Derek Jeter
American: Lance Armstrong | Neil Armstrong | Buzz Aldrin
American: Apple Inc. | Microsoft | Google | Alphabet Inc. | Meta Platforms | Nvidia | Intel | IBM | Oracle Corporation
American: Uber | Airbnb | PayPal | Adobe Inc. | Salesforce | Dell | HP Inc. | Qualcomm | Boeing | Lockheed Martin
American: Ford Motor Company | General Motors | Chrysler | Nike, Inc. | Walmart | Target Corporation | Costco
American: Johnson & Johnson | Pfizer | Moderna | Visa Inc. | Mastercard | JPMorgan Chase | Goldman Sachs | Morgan Stanley
American: Bank of America | Citigroup | ExxonMobil | Chevron Corporation | Warner Bros. | Universal Pictures
American: Paramount Pictures | Columbia Pictures | Pixar | Marvel Studios | Electronic Arts | Delta Air Lines
American: American Airlines | United Airlines
British: Winston Churchill | Margaret Thatcher | Tony Blair | Gordon Brown | David Cameron | Theresa May | Boris Johnson
British: Rishi Sunak | Keir Starmer | Jeremy Corbyn | Andy Murray | Mo Farah | Lewis Hamilton | Freddie Mercury | Dua Lipa
British: Audrey Hepburn | Tilda Swinton | J. K. Rowling | Richard Branson | Jaguar Cars | Rolls-Royce Motor Cars | HSBC
British: Barclays | Shell plc | BP | British Airways | EasyJet
English: Harry Kane | Wayne Rooney | David Beckham | Victoria Beckham | Steven Gerrard | Frank Lampard | Gary Lineker
English: Alan Shearer | Jude Bellingham | Bukayo Saka | Marcus Rashford | Bobby Charlton | Bobby Moore | Jordan Henderson
English: Jordan Pickford | John Lennon | Paul McCartney | George Harrison | Ringo Starr | Mick Jagger | Keith Richards
English: David Bowie | Elton John | Adele | Ed Sheeran | Amy Winehouse | Harry Styles | Sting (musician) | Phil Collins
English: Peter Gabriel | Eric Clapton | Ozzy Osbourne | George Michael | Robbie Williams | Noel Gallagher | Liam Gallagher
English: Thom Yorke | Kate Winslet | Emma Watson | Daniel Radcliffe | Daniel Craig | Judi Dench | Helen Mirren
English: Ian McKellen | Benedict Cumberbatch | Charlie Chaplin | Michael Caine | Gary Oldman | Christian Bale
English: Patrick Stewart | Idris Elba | Orlando Bloom | Alfred Hitchcock | Ridley Scott | William Shakespeare
English: Charles Dickens | Jane Austen | Virginia Woolf | George Orwell | Agatha Christie
American: Mark Twain | Ernest Hemingway | Stephen King
Scottish: Kenny Dalglish | Alex Ferguson | Sean Connery
Welsh: Ryan Giggs | Gareth Bale | Anthony Hopkins
Northern Irish: George Best | Rory McIlroy
Irish: Bono | Cillian Murphy | Ryanair
German: Angela Merkel | Olaf Scholz | Helmut Kohl | Konrad Adenauer | Ursula von der Leyen | Franz Beckenbauer
German: Gerd Müller | Thomas Müller | Manuel Neuer | Lothar Matthäus | Jürgen Klopp | Steffi Graf | Boris Becker
German: Michael Schumacher | Sebastian Vettel | Dirk Nowitzki | Karl Marx | Friedrich Nietzsche | Immanuel Kant
German: Volkswagen | BMW | Audi | Porsche | Adidas | Puma (brand) | Bayer | Deutsche Bank | Lufthansa
French: Emmanuel Macron | Nicolas Sarkozy | François Hollande | Jacques Chirac | Charles de Gaulle | Zinedine Zidane
French: Thierry Henry | Kylian Mbappé | Karim Benzema | Eric Cantona | Antoine Griezmann | Paul Pogba | N'Golo Kanté
French: Arsène Wenger | Gérard Depardieu | Juliette Binoche | Marion Cotillard | Claude Monet | Victor Hugo
French: Renault | Peugeot | BNP Paribas | TotalEnergies | Ubisoft | Louis Vuitton | Chanel | Hermès | Air France
Russian: Vladimir Putin | Boris Yeltsin | Vladimir Lenin | Maria Sharapova | Leo Tolstoy | Fyodor Dostoevsky | Gazprom
Soviet: Mikhail Gorbachev | Joseph Stalin
Ukrainian: Volodymyr Zelenskyy
Chinese: Xi Jinping | Mao Zedong | Deng Xiaoping | Yao Ming | Jack Ma | Confucius | Huawei | Xiaomi | Alibaba Group
Chinese: Tencent | Baidu | ByteDance | Lenovo
Indian: Narendra Modi | Indira Gandhi | Jawaharlal Nehru | Rahul Gandhi | Sachin Tendulkar | Virat Kohli
Indian-American: Satya Nadella | Sundar Pichai
Taiwanese-American: Jensen Huang
South African: Nelson Mandela
Canadian: Justin Trudeau | Pierre Trudeau | Wayne Gretzky | Justin Bieber | Drake (musician) | Celine Dion | The Weeknd
Canadian: Keanu Reeves | Ryan Gosling | James Cameron | Denis Villeneuve | Toronto Raptors | Toronto Blue Jays
Canadian: Montreal Canadiens | Toronto Maple Leafs | Edmonton Oilers | Winnipeg Jets
Canadian-American: Jim Carrey
New Zealand: Jacinda Ardern | Peter Jackson
Japanese: Shinzo Abe | Naomi Osaka | Shohei Ohtani | Akira Kurosawa | Hayao Miyazaki | Toyota | Honda | Nissan
Japanese: Nintendo | Sega
Turkish: Recep Tayyip Erdoğan
Israeli: Benjamin Netanyahu
Palestinian: Yasser Arafat
Cuban: Fidel Castro
Venezuelan: Hugo Chávez
Brazilian: Luiz Inácio Lula da Silva | Jair Bolsonaro | Ronaldo (Brazilian footballer) | Ronaldinho | Neymar | Pelé
Brazilian: Vinícius Júnior | Ayrton Senna
Argentine: Javier Milei | Lionel Messi | Diego Maradona
North Korean: Kim Jong Un | Kim Jong Il | Kim Il Sung
Italian: Silvio Berlusconi | Giorgia Meloni | Mario Draghi | Gianluigi Buffon | Andrea Pirlo | Francesco Totti
Italian: Paolo Maldini | Carlo Ancelotti | Jannik Sinner | Sophia Loren | Federico Fellini | Raphael | Lamborghini | Fiat
Italian: Gucci | Prada
Spanish: Pedro Sánchez | Andrés Iniesta | Sergio Ramos | Pep Guardiola | Rafael Nadal | Carlos Alcaraz | Fernando Alonso
Spanish: Penélope Cruz | Javier Bardem | Antonio Banderas | Pedro Almodóvar | Pablo Picasso | Salvador Dalí
Spanish: Miguel de Cervantes
Dutch: Mark Rutte | Johan Cruyff | Marco van Basten | Dennis Bergkamp | Arjen Robben | Virgil van Dijk | Max Verstappen
Dutch: Vincent van Gogh | Rembrandt
Portuguese: António Guterres | Cristiano Ronaldo | José Mourinho
Norwegian: Erling Haaland
Egyptian: Mohamed Salah
Belgian: Kevin De Bruyne | Eddy Merckx
Polish: Robert Lewandowski | Iga Świątek
Croatian: Luka Modrić
Swedish: Zlatan Ibrahimović | Björn Borg | Ericsson | Volvo Cars | H&M
Finnish: Nokia
Ivorian: Didier Drogba
Cameroonian: Samuel Eto'o
Senegalese: Sadio Mané
South Korean: Son Heung-min | Bong Joon-ho | Samsung Electronics | Hyundai Motor Company
Uruguayan: Luis Suárez
Swiss: Roger Federer | UBS
Serbian: Novak Djokovic | Nikola Jokić
Czech-American: Martina Navratilova
Jamaican: Usain Bolt | Bob Marley
Kenyan: Eliud Kipchoge
Filipino: Manny Pacquiao
Australian: Don Bradman | Nicole Kidman | Cate Blanchett | Hugh Jackman | Chris Hemsworth | Margot Robbie | Heath Ledger
Australian: Kylie Minogue
Slovenian: Tadej Pogačar | Luka Dončić
Greek: Giannis Antetokounmpo
Barbadian: Rihanna
Colombian: Shakira | Gabriel García Márquez
Puerto Rican: Bad Bunny
Austrian-American: Arnold Schwarzenegger
Hong Kong: Jackie Chan
British-American: Christopher Nolan
Mexican: Frida Kahlo
European: Airbus
British-Swedish: AstraZeneca
Saudi: Saudi Aramco
Emirati: Emirates (airline)
Qatari: Qatar Airways
English: The Beatles | The Rolling Stones | Led Zeppelin | Pink Floyd | The Who | Iron Maiden | Black Sabbath | Radiohead
English: Oasis (band) | Blur (band) | Muse (band) | Arctic Monkeys | The Cure | The Smiths | Depeche Mode | Duran Duran
English: Genesis (band) | Take That | Asia (band) | Yes (band) | The Police | The Clash | Sex Pistols | The Kinks
English: Massive Attack | Pulp (band) | Def Leppard | Pet Shop Boys | Joy Division | The Verve | The Stone Roses
British: Queen (band) | Coldplay | Spice Girls | Cream (band) | Gorillaz | Dire Straits | Eurythmics
British-American: Fleetwood Mac
English-Irish: One Direction
Scottish: Franz Ferdinand (band) | Simple Minds
Irish: U2
Australian: AC/DC
Swedish: ABBA | Europe (band)
French: Daft Punk
German: Kraftwerk | Rammstein | Scorpions (band)
South Korean: BTS | Blackpink
Canadian: Rush (band)
American: The Doors | Nirvana (band) | Pearl Jam | Foo Fighters | Metallica | Guns N' Roses | Eagles (band) | Aerosmith
American: Bon Jovi | Van Halen | Red Hot Chili Peppers | Green Day | Linkin Park | Backstreet Boys | Boston (band)
American: Chicago (band) | Kansas (band) | Alabama (band) | Journey (band) | Toto (band) | Kiss (band) | Heart (band)
American: Santana (band) | Ramones | Talking Heads | R.E.M. | The Beach Boys | The Supremes | The Jackson 5 | Beastie Boys
American: Maroon 5 | Imagine Dragons | The Killers | Kings of Leon | The Strokes | The White Stripes | Blink-182 | Weezer
American: Slipknot (band) | Tool (band) | Evanescence | Paramore
""")

OFFICE = groups("""
president of the United States: Barack Obama | Joe Biden | Donald Trump | Bill Clinton | George W. Bush
president of the United States: George H. W. Bush | Ronald Reagan | Jimmy Carter | Richard Nixon | Gerald Ford
president of the United States: Lyndon B. Johnson | John F. Kennedy | Dwight D. Eisenhower | Harry S. Truman
president of the United States: Franklin D. Roosevelt | Theodore Roosevelt | Woodrow Wilson | Abraham Lincoln
president of the United States: George Washington | Thomas Jefferson | John Adams | James Madison | James Monroe
president of the United States: Andrew Jackson | Ulysses S. Grant | Grover Cleveland
vice president of the United States: Kamala Harris | Mike Pence | Al Gore
United States secretary of state: Hillary Clinton
United States secretary of the treasury: Alexander Hamilton
president of the Republic of Texas: Sam Houston
United States senator: Bernie Sanders | John McCain | Mitt Romney | Robert F. Kennedy
speaker of the United States House of Representatives: Nancy Pelosi
prime minister of the United Kingdom: Winston Churchill | Margaret Thatcher | Tony Blair | Gordon Brown | David Cameron
prime minister of the United Kingdom: Theresa May | Boris Johnson | Rishi Sunak | Keir Starmer
leader of the Labour Party: Jeremy Corbyn
chancellor of Germany: Angela Merkel | Olaf Scholz | Helmut Kohl | Konrad Adenauer
president of the European Commission: Ursula von der Leyen
president of France: Emmanuel Macron | Nicolas Sarkozy | François Hollande | Jacques Chirac | Charles de Gaulle
president of Russia: Vladimir Putin | Boris Yeltsin
leader of the Soviet Union: Mikhail Gorbachev | Joseph Stalin | Vladimir Lenin
president of Ukraine: Volodymyr Zelenskyy
paramount leader of China: Xi Jinping | Mao Zedong | Deng Xiaoping
prime minister of India: Narendra Modi | Indira Gandhi | Jawaharlal Nehru
president of South Africa: Nelson Mandela
prime minister of Canada: Justin Trudeau | Pierre Trudeau
prime minister of New Zealand: Jacinda Ardern
prime minister of Japan: Shinzo Abe
president of Turkey: Recep Tayyip Erdoğan
prime minister of Israel: Benjamin Netanyahu
chairman of the Palestine Liberation Organization: Yasser Arafat
leader of Cuba: Fidel Castro
president of Venezuela: Hugo Chávez
president of Brazil: Luiz Inácio Lula da Silva | Jair Bolsonaro
president of Argentina: Javier Milei
supreme leader of North Korea: Kim Jong Un | Kim Jong Il | Kim Il Sung
prime minister of Italy: Silvio Berlusconi | Giorgia Meloni | Mario Draghi
prime minister of Spain: Pedro Sánchez
prime minister of the Netherlands: Mark Rutte
secretary-general of the United Nations: António Guterres
""")

LOCATION = groups("""
Europe: Albania | Andorra | Austria | Belarus | Belgium | Bosnia and Herzegovina | Bulgaria | Croatia | Czech Republic
Europe: Denmark | Estonia | Finland | France | Germany | Greece | Hungary | Iceland | Republic of Ireland | Italy | Latvia
Europe: Liechtenstein | Lithuania | Luxembourg | Malta | Moldova | Monaco | Montenegro | Netherlands | North Macedonia
Europe: Norway | Poland | Portugal | Romania | San Marino | Serbia | Slovakia | Slovenia | Spain | Sweden | Switzerland
Europe: Ukraine | United Kingdom | Vatican City
the Caucasus: Georgia (country) | Armenia | Azerbaijan
Central Asia: Kazakhstan | Kyrgyzstan | Tajikistan | Turkmenistan | Uzbekistan
Asia: Afghanistan | Bahrain | Bangladesh | Bhutan | Brunei | Cambodia | China | India | Indonesia | Iran | Iraq | Israel
Asia: Japan | Jordan | Kuwait | Laos | Lebanon | Malaysia | Maldives | Mongolia | Myanmar | Nepal | North Korea | Oman
Asia: Pakistan | Philippines | Qatar | Saudi Arabia | Singapore | South Korea | Sri Lanka | Syria | Taiwan | Thailand
Asia: United Arab Emirates | Vietnam | Yemen | East Timor
Africa: Algeria | Angola | Benin | Botswana | Burkina Faso | Burundi | Cameroon | Cape Verde | Central African Republic
Africa: Chad | Comoros | Democratic Republic of the Congo | Republic of the Congo | Djibouti | Equatorial Guinea | Eritrea
Africa: Eswatini | Ethiopia | Gabon | The Gambia | Ghana | Guinea | Guinea-Bissau | Ivory Coast | Kenya | Lesotho | Liberia
Africa: Libya | Madagascar | Malawi | Mali | Mauritania | Mauritius | Morocco | Mozambique | Namibia | Niger | Nigeria
Africa: Rwanda | São Tomé and Príncipe | Senegal | Seychelles | Sierra Leone | Somalia | South Africa | South Sudan
Africa: Sudan | Tanzania | Togo | Tunisia | Uganda | Zambia | Zimbabwe
North America: Canada | Mexico | United States
Central America: Belize | Costa Rica | El Salvador | Guatemala | Honduras | Nicaragua | Panama
the Caribbean: Antigua and Barbuda | The Bahamas | Barbados | Cuba | Dominica | Dominican Republic | Grenada | Haiti
the Caribbean: Jamaica | Saint Kitts and Nevis | Saint Lucia | Saint Vincent and the Grenadines | Trinidad and Tobago
South America: Argentina | Bolivia | Brazil | Chile | Colombia | Ecuador | Guyana | Paraguay | Peru | Suriname | Uruguay
South America: Venezuela
Oceania: Australia | Fiji | Kiribati | Marshall Islands | Federated States of Micronesia | Nauru | New Zealand | Palau
Oceania: Papua New Guinea | Samoa | Solomon Islands | Tonga | Tuvalu | Vanuatu
Northeastern: Connecticut | Maine | Massachusetts | New Hampshire | Rhode Island | Vermont | New Jersey | New York (state)
Northeastern: Pennsylvania
Midwestern: Illinois | Indiana | Michigan | Ohio | Wisconsin | Iowa | Kansas | Minnesota | Missouri | Nebraska
Midwestern: North Dakota | South Dakota
Southern: Delaware | Florida | Georgia (U.S. state) | Maryland | North Carolina | South Carolina | Virginia
Southern: West Virginia | Alabama | Kentucky | Mississippi | Tennessee | Arkansas | Louisiana | Oklahoma | Texas
Western: Arizona | Colorado | Idaho | Montana | Nevada | New Mexico | Utah | Wyoming | California | Oregon
Western: Washington (state)
France: Paris | Marseille | Lyon | Nice | Toulouse | Bordeaux | Lille | Strasbourg | Nantes | Le Mans
England, United Kingdom: London | Manchester | Liverpool | Birmingham | Leeds | Sheffield | Bristol | Newcastle upon Tyne
England, United Kingdom: Nottingham | Leicester | Southampton | Oxford | Cambridge | Brighton | York
Somerset, England: Bath, Somerset
Berkshire, England: Reading, Berkshire
Scotland, United Kingdom: Edinburgh | Glasgow | Perth, Scotland
Wales, United Kingdom: Cardiff
Northern Ireland, United Kingdom: Belfast
Germany: Berlin | Munich | Hamburg | Frankfurt | Cologne | Stuttgart | Düsseldorf | Dortmund | Leipzig | Dresden | Bremen
Spain: Madrid | Barcelona | Valencia | Seville | Bilbao | Málaga | Granada | Córdoba, Spain | Toledo, Spain
Spain: Santiago de Compostela
Italy: Rome | Milan | Turin | Naples | Florence | Venice | Genoa | Bologna | Palermo
Portugal: Lisbon | Porto
Austria: Vienna
Czech Republic: Prague
Hungary: Budapest
Poland: Warsaw | Kraków | Gdańsk
the Netherlands: Amsterdam | Rotterdam | The Hague
Belgium: Brussels | Antwerp
Denmark: Copenhagen
Sweden: Stockholm
Norway: Oslo
Finland: Helsinki
Ireland: Dublin
Greece: Athens | Thessaloniki
Turkey: Istanbul | Ankara | Batman, Turkey
Russia: Moscow | Saint Petersburg
Ukraine: Kyiv
Belarus: Minsk
Romania: Bucharest
Bulgaria: Sofia
Serbia: Belgrade
Croatia: Zagreb | Split, Croatia
Slovenia: Ljubljana
Slovakia: Bratislava
Lithuania: Vilnius
Latvia: Riga
Estonia: Tallinn
Iceland: Reykjavík
Switzerland: Bern | Zürich | Geneva | Basel | Lausanne
Morocco: Marrakesh | Casablanca
Egypt: Cairo | Alexandria
Nigeria: Lagos
Kenya: Nairobi
Ethiopia: Addis Ababa
South Africa: Johannesburg | Cape Town | Durban
Ghana: Accra
Senegal: Dakar
the Democratic Republic of the Congo: Kinshasa
Tunisia: Tunis
Algeria: Algiers
Sudan: Khartoum
Japan: Tokyo | Osaka | Kyoto | Hiroshima | Nagasaki | Kobe | Yokohama | Sapporo
China: Beijing | Shanghai | Guangzhou | Shenzhen | Wuhan | Chengdu
South Korea: Seoul | Busan
North Korea: Pyongyang
Taiwan: Taipei
Thailand: Bangkok
Vietnam: Hanoi | Ho Chi Minh City
the Philippines: Manila
Indonesia: Jakarta
Malaysia: Kuala Lumpur
India: Mumbai | Delhi | New Delhi | Kolkata | Chennai | Bangalore | Hyderabad
Pakistan: Karachi | Lahore | Islamabad
Bangladesh: Dhaka
Nepal: Kathmandu
Sri Lanka: Colombo
Afghanistan: Kabul
Iran: Tehran
Iraq: Baghdad
Syria: Damascus
Lebanon: Beirut
Jordan: Amman
the Southern Levant: Jerusalem
Israel: Tel Aviv
Saudi Arabia: Riyadh | Mecca | Medina
the United Arab Emirates: Dubai | Abu Dhabi
Qatar: Doha
Oman: Muscat
Australia: Sydney | Melbourne | Brisbane | Perth | Adelaide | Canberra
Northern Territory, Australia: Darwin, Northern Territory
New South Wales, Australia: Newcastle, New South Wales
New Zealand: Auckland | Wellington | Christchurch
Canada: Toronto | Montreal | Vancouver | Ottawa | Calgary | Edmonton | Quebec City
Ontario, Canada: Hamilton, Ontario | London, Ontario
British Columbia, Canada: Victoria, British Columbia
Mexico: Mexico City | Guadalajara
Cuba: Havana
Jamaica: Kingston, Jamaica
Colombia: Bogotá | Medellín
Peru: Lima
Chile: Santiago
Argentina: Buenos Aires | Córdoba, Argentina
Uruguay: Montevideo
Brazil: São Paulo | Rio de Janeiro | Brasília
Bahia, Brazil: Salvador, Bahia
Venezuela: Caracas
Ecuador: Quito
Bolivia: La Paz
Paraguay: Asunción
Costa Rica: San José, Costa Rica
New York, United States: New York City | Buffalo, New York | Albany, New York
California, United States: Los Angeles | San Diego | San Francisco | San Jose, California | Sacramento, California
Illinois, United States: Chicago | Springfield, Illinois | Cairo, Illinois
Texas, United States: Houston | San Antonio | Dallas | Austin, Texas | Paris, Texas
Pennsylvania, United States: Philadelphia | Pittsburgh
Washington, United States: Seattle
Massachusetts, United States: Boston | Cambridge, Massachusetts | Springfield, Massachusetts | Salem, Massachusetts
Florida, United States: Miami | Orlando, Florida | Tampa, Florida | Jacksonville, Florida | Melbourne, Florida
Georgia, United States: Atlanta | Athens, Georgia
Colorado, United States: Denver
Michigan, United States: Detroit
Ohio, United States: Cleveland | Columbus, Ohio | Cincinnati | Toledo, Ohio
Tennessee, United States: Memphis, Tennessee | Nashville, Tennessee
Louisiana, United States: New Orleans
Nevada, United States: Las Vegas
Oregon, United States: Portland, Oregon | Salem, Oregon
Maine, United States: Portland, Maine
Minnesota, United States: Minneapolis
Wisconsin, United States: Milwaukee | Madison, Wisconsin
Maryland, United States: Baltimore
Missouri, United States: St. Louis | Kansas City, Missouri
Indiana, United States: Indianapolis
North Carolina, United States: Charlotte, North Carolina | Raleigh, North Carolina
Arizona, United States: Phoenix, Arizona
Utah, United States: Salt Lake City
Oklahoma, United States: Oklahoma City
Mississippi, United States: Jackson, Mississippi
Nebraska, United States: Lincoln, Nebraska | Omaha, Nebraska
Idaho, United States: Moscow, Idaho | Boise, Idaho
Alabama, United States: Birmingham, Alabama
New Hampshire, United States: Manchester, New Hampshire
Hawaii, United States: Honolulu
Alaska, United States: Anchorage, Alaska
New Mexico, United States: Santa Fe, New Mexico
Iowa, United States: Des Moines, Iowa
Virginia, United States: Richmond, Virginia | Alexandria, Virginia
Kentucky, United States: Louisville, Kentucky
Connecticut, United States: Hartford, Connecticut
Rhode Island, United States: Providence, Rhode Island
New Jersey, United States: Newark, New Jersey
South Carolina, United States: Columbia, South Carolina
South America: Amazon River | Orinoco
northeastern Africa: Nile
the United States: Mississippi River | Missouri River
China: Yangtze | Yellow River
India and Bangladesh: Ganges
South Asia: Indus River
Southeast Asia: Mekong
Central and Eastern Europe: Danube
Western Europe: Rhine
southern England: River Thames
northern France: Seine
France: Loire
Switzerland and France: Rhône
Central Europe: Elbe
Russia: Volga | Ural Mountains
Eastern Europe: Dnieper
Italy: Tiber
the Middle East: Jordan River
Western Asia: Euphrates | Tigris
Central Africa: Congo River
West Africa: Niger River
southern Africa: Zambezi
the southwestern United States and Mexico: Rio Grande | Colorado River
New York, United States: Hudson River
the eastern United States: Ohio River
the Pacific Northwest of North America: Columbia River
the southeastern United States: Tennessee River
Canada and the United States: St. Lawrence River
Asia: Himalayas
Europe: Alps
South America: Andes
western North America: Rocky Mountains
North Africa: Atlas Mountains
eastern North America: Appalachian Mountains
Cambridge, Massachusetts: Harvard University | Massachusetts Institute of Technology
California, United States: Stanford University
New Haven, Connecticut: Yale University
Princeton, New Jersey: Princeton University
New York City: Columbia University | John F. Kennedy International Airport
Oxford, England: University of Oxford
Cambridge, England: University of Cambridge
London, England: Imperial College London | Heathrow Airport
Seattle, Washington: University of Washington
Ann Arbor, Michigan: University of Michigan
Berkeley, California: University of California, Berkeley
Chicago, Illinois: University of Chicago
Toronto, Canada: University of Toronto
Tokyo, Japan: University of Tokyo
Beijing, China: Tsinghua University | Peking University
Zürich, Switzerland: ETH Zurich
Manchester, England: University of Manchester
Atlanta, Georgia: Georgia Tech
Pasadena, California: California Institute of Technology
Paris, France: Charles de Gaulle Airport
""")

YEAR = groups("""
1939: Gone with the Wind (film) | The Wizard of Oz (1939 film)
1941: Citizen Kane
1942: Casablanca (film)
1960: Psycho (1960 film)
1972: The Godfather
1975: Jaws (film)
1976: Taxi Driver | Rocky
1979: Alien (film) | Apocalypse Now | Manhattan (1979 film)
1982: E.T. the Extra-Terrestrial | Blade Runner
1984: Paris, Texas (film)
1986: Top Gun
1990: Goodfellas
1993: Schindler's List | Jurassic Park (film) | Philadelphia (film)
1994: Pulp Fiction | Forrest Gump | The Shawshank Redemption
1995: Braveheart
1996: Fargo (1996 film)
1997: Titanic (1997 film)
1999: The Matrix | Fight Club
2000: Gladiator (2000 film)
2002: Chicago (2002 film)
2004: Troy (film)
2008: The Dark Knight | Slumdog Millionaire
2009: Avatar (2009 film)
2010: Inception
2014: Interstellar (film)
2016: La La Land
2018: Black Panther (film)
2019: Parasite (2019 film) | Joker (2019 film) | Avengers: Endgame
2021: Dune (2021 film)
2022: Top Gun: Maverick | Everything Everywhere All at Once
2023: Oppenheimer (film) | Barbie (film)
""")

DESCRIPTIONS = pairs("""
Russia | transcontinental country in Eastern Europe and North Asia
Turkey | transcontinental country in West Asia and Southeast Europe
Egypt | transcontinental country in North Africa and West Asia
Cyprus | island country in the eastern Mediterranean Sea
Kosovo | partially recognised state in Southeast Europe
State of Palestine | partially recognised state in West Asia
Ireland | island in the North Atlantic, west of Great Britain
Great Britain | island in the North Atlantic, largest of the British Isles
England | country that is part of the United Kingdom
Scotland | country that is part of the United Kingdom
Wales | country that is part of the United Kingdom
Northern Ireland | part of the United Kingdom on the island of Ireland
Greenland | autonomous island territory of the Kingdom of Denmark
Puerto Rico | unincorporated territory of the United States in the Caribbean
Hong Kong | special administrative region of China
Macau | special administrative region of China
Catalonia | autonomous community in north-eastern Spain
Bavaria | state in the south-east of Germany
Quebec | province of Canada
Ontario | province of Canada
British Columbia | province of Canada on the Pacific coast
Alberta | province of Canada
Tasmania | island state of Australia
Queensland | state of Australia
New South Wales | state of Australia
Victoria (state) | state of Australia
Western Australia | state of Australia
Sicily | island and autonomous region of Italy
Sardinia | island and autonomous region of Italy
Corsica | Mediterranean island and territorial collectivity of France
Crete | largest island of Greece
Java | island of Indonesia
Sumatra | island of Indonesia
Borneo | island in Southeast Asia shared by three countries
Bali | island and province of Indonesia
Tibet | region in East Asia on the Tibetan Plateau
Siberia | vast region of Russia in North Asia
Kashmir | region in the north of the Indian subcontinent
Andalusia | autonomous community in southern Spain
Tuscany | region of central Italy
Lombardy | region of northern Italy
Lazio | region of central Italy
Flanders | Dutch-speaking northern region of Belgium
Normandy | region of northern France
Brittany | region of north-western France
Provence | historical region of south-eastern France
Cornwall | county in the south-west of England
Yorkshire | historic county of northern England
Jersey | island and British Crown Dependency in the English Channel
New Guinea | large island in the south-western Pacific Ocean
Europe | continent in the Northern Hemisphere
Asia | largest continent on Earth
Africa | second-largest continent on Earth
North America | continent in the Northern and Western Hemispheres
South America | continent in the Western Hemisphere
Antarctica | ice-covered continent around the South Pole
Oceania | geographical region in the Pacific Ocean
Middle East | transcontinental region centred on West Asia
Scandinavia | subregion of Northern Europe
Balkans | peninsula and region of south-eastern Europe
Caribbean | region of islands in the Caribbean Sea
Crimea | peninsula on the northern coast of the Black Sea
Gaza Strip | Palestinian territory on the Mediterranean coast
West Bank | Palestinian territory west of the Jordan River
Alaska | state of the United States in the northwest of North America
Hawaii | island state of the United States in the Pacific Ocean
Washington, D.C. | capital city of the United States
Tottenham | area of north London, England
Chelsea, London | area of west London, England
Memphis, Egypt | ancient capital of Egypt on the Nile
Troy | ancient city in Anatolia, setting of the Trojan War
Sparta | ancient Greek city-state in the Peloponnese
Carthage | ancient city in present-day Tunisia
Pompeii | ancient Roman city buried by Mount Vesuvius
Manhattan | borough of New York City
Brooklyn | borough of New York City
Silicon Valley | region in California known for technology companies
Michelle Obama | American lawyer and author, former first lady of the United States
Chelsea Clinton | American writer and global health advocate
Jacqueline Kennedy Onassis | first lady of the United States from 1961 to 1963
Benjamin Franklin | American polymath, writer, scientist and Founding Father
Condoleezza Rice | American diplomat and political scientist, former secretary of state
Colin Powell | American army general and United States secretary of state
Henry Kissinger | German-born American diplomat and United States secretary of state
Martin Luther King Jr. | American Baptist minister and civil rights movement leader
Elizabeth II | Queen of the United Kingdom from 1952 to 2022
Charles III | King of the United Kingdom since 2022
Diana, Princess of Wales | member of the British royal family, first wife of Charles III
Queen Victoria | Queen of the United Kingdom from 1837 to 1901
Henry VIII | King of England from 1509 to 1547
Horatio Nelson, 1st Viscount Nelson | British Royal Navy admiral
Arthur Wellesley, 1st Duke of Wellington | British Army officer and statesman, victor at Waterloo
Francis Drake | English explorer and naval commander
Napoleon | French military leader and Emperor of the French
Mahatma Gandhi | Indian lawyer and leader of the Indian independence movement
Che Guevara | Argentine Marxist revolutionary and guerrilla leader
Pope Francis | Argentine-born head of the Catholic Church from 2013 to 2025
Pope John Paul II | Polish-born head of the Catholic Church from 1978 to 2005
Pope Benedict XVI | German-born head of the Catholic Church from 2005 to 2013
Kofi Annan | Ghanaian diplomat and secretary-general of the United Nations
Ban Ki-moon | South Korean diplomat and secretary-general of the United Nations
Julius Caesar | Roman general and statesman
Augustus | first Roman emperor
Alexander the Great | king of ancient Macedon and conqueror
Cleopatra | last active ruler of Ptolemaic Egypt
Genghis Khan | founder and first khan of the Mongol Empire
Adolf Hitler | dictator of Nazi Germany from 1933 to 1945
Benito Mussolini | Italian fascist dictator
Otto von Bismarck | Prussian statesman and first chancellor of the German Empire
Archduke Franz Ferdinand of Austria | heir to the Austro-Hungarian throne, assassinated in 1914
Macbeth, King of Scotland | King of Scotland from 1040 to 1057
George Weah | Liberian former footballer and president of Liberia
Mo Farah | British long-distance runner
Eliud Kipchoge | Kenyan long-distance runner
Ringo Starr | English drummer of the Beatles
Keith Richards | English guitarist of the Rolling Stones
George Harrison | English musician, lead guitarist of the Beatles
Jimi Hendrix | American guitarist and singer
Eric Clapton | English guitarist and singer
Carlos Santana | Mexican-American guitarist
Eddie Van Halen | American guitarist
Miles Davis | American jazz trumpeter and bandleader
Louis Armstrong | American jazz trumpeter and singer
Victoria Beckham | English singer and fashion designer
Tina Turner | American-born Swiss singer
Wolfgang Amadeus Mozart | Austrian composer of the Classical period
Ludwig van Beethoven | German composer and pianist
Johann Sebastian Bach | German composer of the Baroque period
Frédéric Chopin | Polish composer and pianist
Luciano Pavarotti | Italian operatic tenor
Russell Crowe | New Zealand-born actor
Bruce Lee | Hong Kong American martial artist and actor
Oprah Winfrey | American talk show host and media proprietor
Paris Hilton | American media personality and businesswoman
Kim Kardashian | American media personality and businesswoman
Walt Disney | American animator and film producer
Albert Einstein | German-born theoretical physicist
Isaac Newton | English mathematician and physicist
Charles Darwin | English naturalist and biologist
Marie Curie | Polish-French physicist and chemist
Pierre Curie | French physicist
Nikola Tesla | Serbian-American inventor and electrical engineer
Thomas Edison | American inventor and businessman
Galileo Galilei | Italian astronomer and physicist
Nicolaus Copernicus | Polish Renaissance astronomer and mathematician
Johannes Kepler | German astronomer and mathematician
Stephen Hawking | English theoretical physicist and cosmologist
Richard Feynman | American theoretical physicist
Niels Bohr | Danish physicist
Max Planck | German theoretical physicist
Werner Heisenberg | German theoretical physicist
Erwin Schrödinger | Austrian theoretical physicist
Alan Turing | English mathematician and computer scientist
Ada Lovelace | English mathematician and computing pioneer
Charles Babbage | English mathematician and mechanical engineer
Rosalind Franklin | English chemist and X-ray crystallographer
Francis Crick | English molecular biologist
Louis Pasteur | French chemist and microbiologist
Alexander Fleming | Scottish physician and microbiologist
Gregor Mendel | Austrian biologist and Augustinian friar
Dmitri Mendeleev | Russian chemist
Michael Faraday | English physicist and chemist
James Clerk Maxwell | Scottish physicist
Carl Sagan | American astronomer and science communicator
Jane Goodall | English primatologist and anthropologist
Sigmund Freud | Austrian neurologist and founder of psychoanalysis
Aristotle | ancient Greek philosopher
Plato | ancient Greek philosopher
Socrates | ancient Greek philosopher
Archimedes | ancient Greek mathematician and inventor
Euclid | ancient Greek mathematician
Pythagoras | ancient Greek philosopher and mathematician
Leonardo da Vinci | Italian Renaissance polymath and painter
Michelangelo | Italian Renaissance sculptor and painter
Andy Warhol | American visual artist of pop art
Georgia O'Keeffe | American modernist painter
William Shakespeare | English playwright and poet
Tennessee Williams | American playwright
Homer | ancient Greek epic poet
Dante Alighieri | Italian poet, author of the Divine Comedy
Johann Wolfgang von Goethe | German poet and writer
Jesus | central figure of Christianity
Muhammad | founder of Islam
Moses | prophet in the Abrahamic religions
Yuri Gagarin | Soviet cosmonaut, the first human in space
Elon Musk | businessman, chief executive of Tesla and SpaceX
Steve Wozniak | American computer engineer and co-founder of Apple
Henry Ford | American industrialist, founder of Ford Motor Company
Coco Chanel | French fashion designer and founder of Chanel
Christopher Columbus | Italian navigator and explorer
George Vancouver | British Royal Navy officer and explorer
Ferrari | Italian luxury sports car manufacturer
Williams Racing | British Formula One racing team
Red Bull Racing | Formula One racing team owned by Red Bull
Scuderia Ferrari | Italian Formula One racing team
Amazon (company) | American technology and e-commerce company
Apple Records | British record label founded by the Beatles
Facebook | social media service owned by Meta Platforms
Instagram | photo and video sharing social network owned by Meta Platforms
WhatsApp | instant messaging service owned by Meta Platforms
YouTube | online video sharing platform owned by Google
Twitter | American social media service, now called X
Netflix | American subscription video streaming service
Tesla, Inc. | American electric vehicle and clean energy company
SpaceX | American spacecraft manufacturer and launch provider
Samsung | South Korean multinational conglomerate
Sony | Japanese multinational conglomerate
TikTok | short-form video hosting service owned by ByteDance
Spotify | Swedish audio streaming and media service provider
OpenAI | American artificial intelligence company
Anthropic | American artificial intelligence company
TSMC | Taiwanese semiconductor manufacturer
BlackBerry Limited | Canadian software and cybersecurity company
Mercedes-Benz | German luxury automobile brand
Chevrolet | American automobile brand of General Motors
Cadillac | American luxury automobile brand of General Motors
Land Rover | British brand of four-wheel-drive vehicles
Rolls-Royce Holdings | British aerospace and defence company, maker of aircraft engines
Lincoln Motor Company | luxury vehicle division of Ford Motor Company
The Coca-Cola Company | American multinational beverage corporation
Coca-Cola | carbonated soft drink made by the Coca-Cola Company
PepsiCo | American multinational food and beverage corporation
McDonald's | American multinational fast food restaurant chain
Starbucks | American multinational chain of coffeehouses
IKEA | Swedish-founded furniture retailer
Nestlé | Swiss multinational food and drink company
Unilever | British multinational consumer goods company
Procter & Gamble | American multinational consumer goods corporation
Siemens | German multinational technology conglomerate
Philips | Dutch multinational health technology company
Berkshire Hathaway | American multinational conglomerate holding company
Credit Suisse | Swiss investment bank taken over by UBS in 2023
The Walt Disney Company | American multinational entertainment company
Red Bull | energy drink sold by the Austrian company Red Bull GmbH
Heineken | Dutch brewer and pale lager beer brand
Guinness | Irish dry stout beer brewed in Dublin
Lego | line of plastic construction toys made in Denmark
LVMH | French luxury goods conglomerate
Rolex | Swiss luxury watchmaker
Mars, Incorporated | American confectionery and pet food company
Virgin Group | British multinational venture capital conglomerate
Caterpillar Inc. | American construction equipment manufacturer
Orange S.A. | French telecommunications company
Subway (restaurant) | American fast food sandwich restaurant chain
Amazon rainforest | tropical rainforest in the Amazon basin of South America
Mount Everest | highest mountain on Earth, in the Himalayas
K2 | second-highest mountain on Earth, in the Karakoram
Kangchenjunga | third-highest mountain on Earth, in the Himalayas
Mont Blanc | highest mountain in the Alps
Matterhorn | mountain in the Alps on the Swiss-Italian border
Mount Kilimanjaro | dormant volcano in Tanzania, highest mountain in Africa
Mount Fuji | active volcano and highest mountain in Japan
Mount Elbrus | dormant volcano in Russia, highest mountain in Europe
Denali | highest mountain in North America, in Alaska
Aconcagua | highest mountain in the Americas, in Argentina
Mount Olympus | highest mountain in Greece
Mount Etna | active volcano on the east coast of Sicily
Mount Vesuvius | volcano near Naples in Italy
Mount St. Helens | active volcano in Washington state, United States
Mount Rushmore | national memorial with presidents' faces carved in a mountain, South Dakota
Table Mountain | flat-topped mountain overlooking Cape Town, South Africa
Ben Nevis | highest mountain in the United Kingdom, in Scotland
Pyrenees | mountain range between France and Spain
Sahara | desert in North Africa, largest hot desert in the world
Gobi Desert | desert in East Asia, in China and Mongolia
Grand Canyon | steep-sided canyon carved by the Colorado River in Arizona
Niagara Falls | waterfalls on the border of Canada and the United States
Victoria Falls | waterfall on the Zambezi River in southern Africa
Lake Victoria | largest lake in Africa
Lake Titicaca | lake in the Andes on the border of Bolivia and Peru
Lake Baikal | rift lake in Siberia, deepest lake in the world
Lake Geneva | lake on the border of Switzerland and France
Lake Como | lake in Lombardy, Italy
Lake Michigan | one of the five Great Lakes of North America
Lake Superior | largest of the Great Lakes of North America
Dead Sea | salt lake bordered by Jordan, Israel and the West Bank
Caspian Sea | largest inland body of water on Earth
Mediterranean Sea | sea between Europe, North Africa and West Asia
Black Sea | inland sea between Southeast Europe and West Asia
Red Sea | sea between Africa and the Arabian Peninsula
Baltic Sea | sea of the Atlantic Ocean in Northern Europe
North Sea | sea between Great Britain and continental Europe
Pacific Ocean | largest and deepest of Earth's oceans
Atlantic Ocean | second-largest of Earth's oceans
Indian Ocean | third-largest of Earth's oceans
Arctic Ocean | smallest and shallowest of Earth's oceans
Great Barrier Reef | world's largest coral reef system, off Queensland, Australia
Yellowstone National Park | national park in the western United States
Everglades | tropical wetland region in southern Florida
Eiffel Tower | wrought-iron lattice tower in Paris, France
Louvre | art museum and historic monument in Paris, France
Big Ben | clock tower of the Palace of Westminster in London
Buckingham Palace | royal residence in London
Tower of London | historic castle on the River Thames in London
Westminster Abbey | Gothic abbey church in Westminster, London
Palace of Westminster | meeting place of the Parliament of the United Kingdom
Colosseum | ancient Roman amphitheatre in Rome
Leaning Tower of Pisa | tilted bell tower of Pisa Cathedral in Italy
Sagrada Família | basilica designed by Antoni Gaudí in Barcelona
Statue of Liberty | colossal statue on Liberty Island in New York Harbor
Empire State Building | Art Deco skyscraper in Midtown Manhattan
Golden Gate Bridge | suspension bridge at the entrance of San Francisco Bay
White House | official residence of the president of the United States
Moscow Kremlin | fortified complex in Moscow, seat of the Russian government
Red Square | city square in the centre of Moscow
Taj Mahal | white marble mausoleum in Agra, India
Great Wall of China | series of ancient fortifications across northern China
Forbidden City | imperial palace complex in Beijing
Tiananmen Square | city square in the centre of Beijing
Machu Picchu | 15th-century Inca citadel in the Andes of Peru
Petra | ancient rock-cut city in southern Jordan
Stonehenge | prehistoric stone monument in Wiltshire, England
Parthenon | ancient temple to Athena on the Acropolis of Athens
Sydney Opera House | performing arts centre on Sydney Harbour
Burj Khalifa | skyscraper in Dubai, tallest building in the world
Notre-Dame de Paris | medieval Catholic cathedral in Paris
Arc de Triomphe | triumphal arch at the top of the Champs-Élysées in Paris
Brandenburg Gate | 18th-century neoclassical monument in Berlin
Berlin Wall | guarded barrier that divided Berlin from 1961 to 1989
Wembley Stadium | football stadium in London, England
Old Trafford | football stadium in Greater Manchester, home of Manchester United
Anfield | football stadium in Liverpool, home of Liverpool F.C.
Camp Nou | football stadium in Barcelona, home of FC Barcelona
Santiago Bernabéu Stadium | football stadium in Madrid, home of Real Madrid
San Siro | football stadium in Milan, Italy
Allianz Arena | football stadium in Munich, home of Bayern Munich
Madison Square Garden | indoor arena in Manhattan, New York City
Central Park | urban park in Manhattan, New York City
Times Square | commercial intersection and entertainment hub in Manhattan
Wall Street | street in Lower Manhattan, centre of American finance
The Pentagon | headquarters of the United States Department of Defense
Kennedy Space Center | NASA rocket launch site in Florida
Victoria and Albert Museum | museum of art and design in London
British Museum | museum of human history and culture in London
Metropolitan Museum of Art | art museum in New York City
America (band) | rock band formed in London in 1970
Bee Gees | pop group formed by the brothers Barry, Robin and Maurice Gibb
BTS | South Korean boy band
Blackpink | South Korean girl group
Spice Girls | British girl group
Backstreet Boys | American boy band
One Direction | English-Irish boy band
Take That | English boy band
The Supremes | American female singing group
The Jackson 5 | American family music group
Frozen (2013 film) | 2013 American animated film by Disney
Toy Story | 1995 American computer-animated film by Pixar
The Lion King | 1994 American animated film by Disney
Spirited Away | 2001 Japanese animated film by Hayao Miyazaki
Indiana Jones | American media franchise of adventure films
Batman | superhero appearing in DC Comics publications
Star Wars | American epic space opera media franchise
Harry Potter | series of fantasy novels by J. K. Rowling
James Bond | spy fiction franchise about a British secret agent
Game of Thrones | American fantasy drama television series
Breaking Bad | American crime drama television series
The Simpsons | American animated sitcom
Friends | American television sitcom
Seinfeld | American television sitcom
Stranger Things | American science fiction horror television series
The Crown (TV series) | historical drama television series about Elizabeth II
Hamilton (musical) | stage musical by Lin-Manuel Miranda
Hannah Montana | American teen sitcom television series
The Lord of the Rings | fantasy novel by J. R. R. Tolkien
The Hobbit | fantasy novel by J. R. R. Tolkien
Hamlet | tragedy by William Shakespeare
Macbeth | tragedy by William Shakespeare
Romeo and Juliet | tragedy by William Shakespeare
War and Peace | novel by Leo Tolstoy
Don Quixote | novel by Miguel de Cervantes
Pride and Prejudice | novel by Jane Austen
Nineteen Eighty-Four | dystopian novel by George Orwell
Animal Farm | allegorical novella by George Orwell
Moby-Dick | novel by Herman Melville
The Great Gatsby | novel by F. Scott Fitzgerald
To Kill a Mockingbird | novel by Harper Lee
One Hundred Years of Solitude | novel by Gabriel García Márquez
Les Misérables | novel by Victor Hugo
Odyssey | ancient Greek epic poem attributed to Homer
Iliad | ancient Greek epic poem attributed to Homer
Bible | collection of religious texts sacred in Christianity and Judaism
Quran | central religious text of Islam
Mona Lisa | portrait painting by Leonardo da Vinci
The Starry Night | oil painting by Vincent van Gogh
Bohemian Rhapsody | 1975 song by Queen
Waterloo (ABBA song) | 1974 song by ABBA
Thriller (album) | 1982 album by Michael Jackson
Abbey Road | 1969 album by the Beatles
United Nations | intergovernmental organization of sovereign states
European Union | political and economic union of European states
NATO | intergovernmental military alliance of European and North American states
World Health Organization | agency of the United Nations for international public health
UNESCO | agency of the United Nations for education, science and culture
UNICEF | agency of the United Nations for children
World Bank | international financial institution lending to developing countries
International Monetary Fund | international financial institution
World Trade Organization | intergovernmental organization regulating international trade
International Olympic Committee | governing body of the Olympic movement
FIFA | international governing body of association football
UEFA | governing body of association football in Europe
International Committee of the Red Cross | humanitarian organization based in Geneva
Amnesty International | international human rights organization
Greenpeace | international environmental organization
Médecins Sans Frontières | international medical humanitarian organization
Human Rights Watch | international human rights organization
African Union | continental union of African states
ASEAN | regional union of Southeast Asian states
OPEC | organization of petroleum-exporting countries
G7 | intergovernmental forum of seven major economies
G20 | intergovernmental forum of major economies
Federal Bureau of Investigation | domestic intelligence and security service of the United States
Central Intelligence Agency | foreign intelligence service of the United States
National Security Agency | signals intelligence agency of the United States
NASA | space agency of the United States
European Space Agency | intergovernmental space agency of European states
United States Congress | legislature of the United States
United States Senate | upper chamber of the United States Congress
Supreme Court of the United States | highest court in the United States
Bundestag | federal parliament of Germany
House of Commons of the United Kingdom | lower house of the Parliament of the United Kingdom
European Parliament | legislative body of the European Union
European Commission | executive branch of the European Union
European Central Bank | central bank of the eurozone
Federal Reserve | central banking system of the United States
Bank of England | central bank of the United Kingdom
BBC | British public service broadcaster
CNN | American news television channel
Reuters | international news agency
Associated Press | American news agency
The New York Times | American daily newspaper
The Washington Post | American daily newspaper
The Guardian | British daily newspaper
The Times | British daily newspaper
Al Jazeera | Qatari state-funded news broadcaster
Wikipedia | free online encyclopedia written by volunteers
Oxford University Press | university press of the University of Oxford
Hamas | Palestinian Islamist political and militant organization
Hezbollah | Lebanese Shia Islamist political party and militant group
Taliban | Afghan Islamist militant and political movement
Islamic State | Salafi jihadist militant group
al-Qaeda | Sunni pan-Islamist militant organization
Democratic Party (United States) | political party in the United States
Republican Party (United States) | political party in the United States
Labour Party (UK) | political party in the United Kingdom
Conservative Party (UK) | political party in the United Kingdom
Christian Democratic Union of Germany | political party in Germany
Chinese Communist Party | founding and ruling political party of China
Indian National Congress | political party in India
Bharatiya Janata Party | political party in India
African National Congress | political party in South Africa
Nobel Prize | set of annual international awards
Nobel Peace Prize | annual Nobel Prize for peace
Academy Awards | annual awards for achievement in film
Grammy Awards | annual awards for achievement in music
Cannes Film Festival | annual film festival in Cannes, France
Golden Globe Awards | annual awards for film and television
Pulitzer Prize | American award for journalism and literature
Booker Prize | annual literary prize for a novel written in English
National Basketball Association | professional basketball league in North America
National Football League | professional American football league in the United States
Major League Baseball | professional baseball league in North America
National Hockey League | professional ice hockey league in North America
Major League Soccer | professional soccer league in North America
FIFA World Cup | international men's association football tournament
2022 FIFA World Cup | international football tournament held in Qatar
2018 FIFA World Cup | international football tournament held in Russia
2014 FIFA World Cup | international football tournament held in Brazil
2010 FIFA World Cup | international football tournament held in South Africa
2026 FIFA World Cup | international football tournament in Canada, Mexico and the United States
UEFA Champions League | annual European club football competition
UEFA Europa League | annual European club football competition
UEFA European Championship | international football championship of European nations
UEFA Euro 2020 | European football championship played in 2021
UEFA Euro 2024 | European football championship held in Germany
Copa América | international football tournament of South American nations
Africa Cup of Nations | international football tournament of African nations
Premier League | top level of the English football league system
La Liga | top professional football division in Spain
Serie A | top professional football division in Italy
Bundesliga | top professional football division in Germany
Ligue 1 | top professional football division in France
FA Cup | annual knockout football competition in England
Olympic Games | international multi-sport event
Summer Olympic Games | international multi-sport event held in summer
Winter Olympic Games | international multi-sport event for winter sports
2008 Summer Olympics | Summer Olympic Games held in Beijing
2012 Summer Olympics | Summer Olympic Games held in London
2016 Summer Olympics | Summer Olympic Games held in Rio de Janeiro
2020 Summer Olympics | Summer Olympic Games held in Tokyo in 2021
2024 Summer Olympics | Summer Olympic Games held in Paris
2028 Summer Olympics | Summer Olympic Games to be held in Los Angeles
2022 Winter Olympics | Winter Olympic Games held in Beijing
Super Bowl | annual championship game of the National Football League
NBA Finals | championship series of the National Basketball Association
World Series | championship series of Major League Baseball
Stanley Cup | championship trophy of the National Hockey League
Wimbledon Championships | tennis tournament in London
US Open (tennis) | tennis tournament in New York City
French Open | tennis tournament in Paris
Australian Open | tennis tournament in Melbourne
Tour de France | annual multiple-stage bicycle race in France
Giro d'Italia | annual multiple-stage bicycle race in Italy
Monaco Grand Prix | Formula One motor race in Monaco
Formula One | highest class of single-seater open-wheel car racing
Indianapolis 500 | annual car race at the Indianapolis Motor Speedway
24 Hours of Le Mans | endurance sports car race in Le Mans, France
Boston Marathon | annual marathon in Boston
London Marathon | annual marathon in London
Masters Tournament | golf tournament at Augusta National in Georgia
Ryder Cup | biennial golf competition between Europe and the United States
Rugby World Cup | international rugby union tournament
Cricket World Cup | international one-day cricket tournament
Six Nations Championship | annual international rugby union competition
The Ashes | Test cricket series between England and Australia
World War I | global war from 1914 to 1918
World War II | global war from 1939 to 1945
Cold War | geopolitical rivalry between the United States and the Soviet Union
French Revolution | period of political upheaval in France from 1789
American Civil War | civil war in the United States from 1861 to 1865
American Revolutionary War | war of independence of the Thirteen Colonies from Britain
Russian Revolution | revolution in Russia in 1917
The Holocaust | genocide of European Jews by Nazi Germany
September 11 attacks | terrorist attacks in the United States in 2001
Brexit | withdrawal of the United Kingdom from the European Union
COVID-19 pandemic | global pandemic of coronavirus disease from 2019
Russian invasion of Ukraine | invasion of Ukraine by Russia that began in 2022
Vietnam War | war in Vietnam, Laos and Cambodia from 1955 to 1975
Korean War | war on the Korean Peninsula from 1950 to 1953
Iraq War | war in Iraq that began with the 2003 invasion
Gulf War | war against Iraq in 1990 and 1991 after its invasion of Kuwait
Battle of Waterloo | 1815 battle in which Napoleon was defeated
Normandy landings | Allied invasion of Normandy on 6 June 1944
Watergate scandal | American political scandal that led to Nixon's resignation
Cuban Missile Crisis | 1962 confrontation between the United States and the Soviet Union
Renaissance | period of European cultural rebirth after the Middle Ages
Industrial Revolution | transition to mechanised manufacturing from the 18th century
Great Depression | worldwide economic depression of the 1930s
Chernobyl disaster | 1986 nuclear accident in Soviet Ukraine
2008 financial crisis | worldwide financial crisis of 2007 and 2008
Arab Spring | wave of protests and uprisings in the Arab world from 2010
Black Death | bubonic plague pandemic in the 14th century
Spanish flu | influenza pandemic of 1918 to 1920
Magna Carta | royal charter of rights agreed by King John of England in 1215
United States Declaration of Independence | founding document of the United States adopted in 1776
Treaty of Versailles | peace treaty that ended World War I
Marshall Plan | American programme to aid Western Europe after World War II
Paris Agreement | international treaty on climate change
Apollo 11 | first crewed mission to land on the Moon
Apollo program | NASA human spaceflight programme that landed humans on the Moon
Project Mercury | first human spaceflight programme of the United States
International Space Station | modular space station in low Earth orbit
Hubble Space Telescope | space telescope launched in 1990
James Webb Space Telescope | space telescope launched in 2021
Mercury (planet) | smallest planet and closest to the Sun
Mercury (element) | chemical element, a metal that is liquid at room temperature
Mercury (mythology) | Roman god of commerce and messenger of the gods
Venus | second planet from the Sun
Venus (mythology) | Roman goddess of love and beauty
Earth | third planet from the Sun
Mars | fourth planet from the Sun
Mars (mythology) | Roman god of war
Jupiter | fifth planet from the Sun, largest in the Solar System
Jupiter (mythology) | king of the gods in Roman mythology
Saturn | sixth planet from the Sun, known for its rings
Saturn (mythology) | Roman god of agriculture and time
Uranus | seventh planet from the Sun
Neptune | eighth planet from the Sun
Neptune (mythology) | Roman god of the sea
Pluto | dwarf planet in the Kuiper belt
Pluto (Disney) | cartoon dog created by Walt Disney Productions
Moon | natural satellite of the Earth
Sun | star at the centre of the Solar System
Milky Way | galaxy that contains the Solar System
Halley's Comet | periodic comet visible from Earth every 75 to 79 years
Apollo | Greek god of music, prophecy and light
Zeus | king of the gods in Greek mythology
Athena | Greek goddess of wisdom and warfare
Nike (mythology) | Greek goddess of victory
Paris (mythology) | Trojan prince in Greek mythology
Ajax the Great | Greek hero of the Trojan War
Phoenix (mythology) | mythical bird reborn from its own ashes
Achilles | Greek hero of the Trojan War
Hercules | Roman name of the Greek divine hero Heracles
Thor | Norse god of thunder
Odin | chief god in Norse mythology
Apple | fruit of the apple tree
Blackberry | edible fruit of the bramble
Jaguar | large wild cat native to the Americas
Cougar | large wild cat native to the Americas
Turkey (bird) | large bird native to North America
Python (programming language) | high-level general-purpose programming language
Java (programming language) | object-oriented programming language
Monty Python | British comedy troupe
Vikings | seafaring people from Scandinavia in the Middle Ages
Celts | ancient and medieval peoples of Europe
Ford Mustang | American sports car made by Ford
Mustang | free-roaming horse of the American West
Nirvana | concept of liberation in Buddhism and other Indian religions
Book of Genesis | first book of the Bible
Amazons | tribe of warrior women in Greek mythology
""")


# ----------------------------------------------------------------------------- building

def entity_kind(line, name):
    kind = KIND_BY_NAME.get(name)
    if kind is None:
        for first, last, range_kind in RANGES:
            if first <= line <= last:
                kind = range_kind
    if kind not in CAPTIONS:
        raise ValueError(f"entities.txt line {line} ({name!r}): no category ({kind!r}); add it to RANGES or KIND_BY_NAME")
    return kind


def nationality(line, name):
    nat = NATIONALITY.get(name)
    for first, last, range_nat in NAT_RANGES:
        if nat is None and first <= line <= last:
            nat = range_nat
    return nat


def describe(line, name, kind):
    """The explicit description, else the category template using the most known fields (ties: by hash)."""
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    fields = {"nat": nationality(line, name), "loc": LOCATION.get(name), "office": OFFICE.get(name),
              "year": YEAR.get(name)}
    usable = [t for t in TEMPLATES.get(kind, []) if all(fields[f] for f in fields if "{" + f + "}" in t)]
    if not usable:
        raise ValueError(f"entities.txt line {line} ({name!r}, {kind}): no description; add it to DESCRIPTIONS "
                         f"or give the fields its category's templates need")
    most = max(t.count("{") for t in usable)
    return pick([t for t in usable if t.count("{") == most], "description", name).format(**fields)


def build_entities(names):
    """[{name, description, image, kind, caption}] in entities.txt order (kind and caption stay internal)."""
    entities = []
    for line, name in enumerate(names, 1):
        kind = entity_kind(line, name)
        has_image = digest("no-image", name) % 100 >= NO_IMAGE_PERCENT
        entities.append({"name": name, "description": describe(line, name, kind),
                         "image": f"demo/entity_{line:04d}.jpg" if has_image else None, "kind": kind,
                         "caption": pick(CAPTIONS[kind], "entity-image", name) if has_image else None})
    return entities


def mention_caption(key, target, entity):
    """What the news photo next to the sentence shows: usually another picture of the gold entity's kind."""
    if target == "NIL":  # invented entities: a picture of anything
        if digest("nil", key) % 2:
            return pick(UNINFORMATIVE, "uninformative", key)
        return pick(CAPTIONS[pick(sorted(CAPTIONS), "nil-kind", key)], "nil-caption", key)
    if digest("uninformative?", key) % 100 < UNINFORMATIVE_PERCENT:
        return pick(UNINFORMATIVE, "uninformative", key)
    options = [c for c in CAPTIONS[entity["kind"]] if c != entity["caption"]]  # a different picture of the same kind
    return pick(options, "mention-image", key)


def check_tables(names):
    """Every name in a table must be an entity: a typo would otherwise silently fall back to a generic phrase."""
    known = set(names)
    for table_name, table in (("KIND_BY_NAME", KIND_BY_NAME), ("NATIONALITY", NATIONALITY), ("OFFICE", OFFICE),
                              ("LOCATION", LOCATION), ("YEAR", YEAR), ("DESCRIPTIONS", DESCRIPTIONS)):
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"{table_name}: not in entities.txt: {unknown}")


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", default=os.path.dirname(os.path.abspath(__file__)),
                   help="folder with entities.txt and the splits (default: this script's folder)")
    data_dir = p.parse_args(argv).data_dir
    with open(os.path.join(data_dir, "entities.txt"), encoding="utf-8") as f:
        names = [line.rstrip("\n") for line in f if line.strip()]
    check_tables(names)
    entities = build_entities(names)
    by_name = {e["name"]: e for e in entities}

    captions = []  # mention images first (splits in order), then entity images (entities.txt order)
    for split in SPLITS:
        with open(os.path.join(data_dir, f"{split}.json"), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    ex = json.loads(line)
                    entity = by_name.get(ex["target"])
                    if entity is None and ex["target"] != "NIL":
                        raise ValueError(f"{split}.json: target {ex['target']!r} is not in entities.txt")
                    captions.append({"key": ex["img_url"], "caption": mention_caption(ex["img_url"], ex["target"], entity)})
    captions += [{"key": e["image"], "caption": e["caption"]} for e in entities if e["image"]]
    if len({c["key"] for c in captions}) != len(captions):
        raise ValueError("an image key occurs twice")

    write_jsonl(os.path.join(data_dir, "entities.jsonl"),
                ({"name": e["name"], "description": e["description"], "image": e["image"]} for e in entities))
    write_jsonl(os.path.join(data_dir, "image_captions.jsonl"), captions)
    n_images = sum(e["image"] is not None for e in entities)
    print(f"wrote {len(entities)} entities ({len(entities) - n_images} without image) and {len(captions)} captions "
          f"({len(captions) - n_images} mention images, {n_images} entity images) to {data_dir}")


if __name__ == "__main__":
    main()
