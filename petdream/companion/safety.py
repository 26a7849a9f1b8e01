"""The companion's crisis-safety screen: rules over normalised text, no model, no network.

Every message is screened before any LLM sees it, and every LLM reply before the person does.

A message goes through three steps:
1. `normalise` folds the ways people (and filter dodgers) write the same words:
   case, accents, apostrophes, leetspeak ("k1ll"), spaced-out letters ("k i l l"),
   stretched letters ("diee"), shorthand ("wanna", "2nite"), common typos ("kil", "wnat")
   and Spanish word order ("me quiero matar" -> "quiero matarme").
2. Figures of speech ("this traffic is killing me") are blanked out, and so, for the crisis
   check only, are risk words that are about something else ("suicide prevention", a game).
3. What is left is matched against tables of signals. A signal right after a negation
   ("i'm not suicidal") does not count; every other signal in the message still does, so
   "I'm not okay, I want to end it all" is a crisis. Ambiguous cues ("which bridges are
   tallest") count as crisis only next to distress or another cue.

The tables favour recall on crisis: a false alarm costs a kind message with helpline numbers,
a miss can cost far more. They are tested against tests/data/safety_messages.tsv, whose
headers record how they did on batches written after them: rules only catch the phrasings
someone thought of, so treat this screen as a floor, not a guarantee.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

LEVELS = ("none", "concern", "crisis")

CRISIS_MESSAGE = """\
I'm really glad you told me. What you're going through sounds so heavy, and you don't have \
to carry it alone. You matter, and right now I'd like you to talk with a real person who can \
be there with you, whether you're thinking about hurting yourself, someone else, or someone \
is hurting you:

- In the US, call or text 988 (Suicide & Crisis Lifeline), any time, day or night.
- Text HOME to 741741 to reach the Crisis Text Line.
- If you're in immediate danger, call your local emergency number (911 in the US).
- In another country, findahelpline.com lists free, confidential lines near you.

En español: no estás solo ni sola. En EE. UU. llama al 988 y marca 2; en otros países, \
busca ayuda en findahelpline.com.

I'm still here with you while you reach out."""

DISCLOSURE = (
    "Just so you know: I'm PetDream's AI companion, not a person, and this is not therapy "
    "and I am not a therapist. I'm here to listen and to draw your pet with you. If things "
    "feel heavy, please reach out to people you trust or a professional, and if you're ever "
    "in crisis in the US, call or text 988."
)


@dataclass(frozen=True)
class SafetyAssessment:
    level: str  # one of LEVELS
    reasons: list[str]  # reason codes such as "suicidal_ideation"; never the screened text

    @property
    def is_crisis(self) -> bool:
        return self.level == "crisis"


# --- Normalisation -------------------------------------------------------------------------

# Digits and symbols standing in for letters, only where they touch a letter ("k1ll", "di3",
# "$uicide"), so "25 m", "10mg" and "988" keep their digits.
LEETSPEAK = {"0": "o", "1": "i", "3": "e", "4": "a", "@": "a", "$": "s", "!": "i"}
LEETSPEAK_CHAR = re.compile(r"(?<=[a-z])[0134@$]|[@$](?=[a-z])|(?<=[a-z])!(?=[a-z])")

# Three or more single letters split by spaces, dots or dashes: "k i l l  m y s e l f".
SPACED_LETTERS = re.compile(r"\b[a-z](?:[\s.\-_*]{1,2}[a-z]\b){2,}")

# Words written the way people type them, folded to the spelling the signal tables use.
SHORTHAND = {
    "wanna": "want to", "gonna": "going to", "gotta": "got to", "ima": "im going to", "u": "you", "ur": "your",
    "2nite": "tonight", "tonite": "tonight", "2day": "today", "2moro": "tomorrow", "kiero": "quiero",
}
# "going 2 end it": a lone 2 after a verb that takes "to".
TEXTSPEAK_TO = re.compile(r"\b(going|want|have|need|got|about|ready|trying|plan) 2\b")
# Spanish puts "me" before or after the verb: "me quiero matar" is "quiero matarme". The tables
# use the second form.
SPANISH_CLITIC = re.compile(r"\bme (quiero|voy a|puedo|debo|tengo que|pienso) (\w+r)\b")

# Words that matter enough to undo one dropped or swapped letter ("kil", "wnat", "lfie",
# "myslef"). Typos that are themselves common words ("ill", "lie") are left alone.
TYPO_TARGETS = ("kill", "myself", "want", "life")
COMMON_WORDS = {"ill", "lie", "lief", "ant", "wan", "wat"}


def _typos(word: str) -> set[str]:
    dropped = {word[:i] + word[i + 1:] for i in range(len(word))}
    swapped = {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)}
    return (dropped | swapped) - {word} - COMMON_WORDS


WORD_FIXES = {typo: word for word in TYPO_TARGETS for typo in _typos(word)} | SHORTHAND


def fold(text: str) -> str:
    """Lower case without accents or apostrophes, one space between words: "Más, I'm" -> "mas, im"."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"['’‘`´ʼ]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def normalise(text: str) -> str:
    """`fold`, then undo leetspeak, spaced and stretched letters, shorthand, typos and word order."""
    text = LEETSPEAK_CHAR.sub(lambda m: LEETSPEAK[m.group()], fold(text))
    text = SPACED_LETTERS.sub(lambda m: re.sub(r"[^a-z]", "", m.group()), text)
    text = re.sub(r"([a-z])\1{2,}", r"\1\1", text)
    text = re.sub(r"[a-z0-9]+", lambda m: WORD_FIXES.get(m.group(), m.group()), text)
    text = TEXTSPEAK_TO.sub(r"\1 to", text)
    return SPANISH_CLITIC.sub(r"\1 \2me", text)


# --- Signal tables -------------------------------------------------------------------------
# Each table maps a reason code to regexes over normalised text. Apostrophes are gone by then,
# so "i'm" is "im" and "don't" is "dont"; so are accents, so "daño" is "dano".

PEOPLE = (
    r"(?:boyfriend|girlfriend|bf|gf|husband|wife|partner|ex|dad|father|stepdad|stepfather|foster \w+|mom|mum|"
    r"mother|stepmom|stepmother|parents?|uncle|aunt|brother|sister|cousin|grandpa|grandma|grandmother|grandfather|"
    r"nana|son|daughter|kids?|child|children|baby|friend|roommate|neighbou?r|coach|teacher|boss|coworker|"
    r"classmates?|family)"
)
PETS = r"(?:dog|cat|pet|puppy|pup|kitten|hamster|parrot|bird|rabbit|bunny|horse|fish|guinea pig)"
BODY = r"(?:arm|nose|ribs?|jaw|wrist|face|neck|hand|finger|leg|tooth|teeth)"
PILLS = r"(?:pills|meds|medication|tablets|painkillers|antidepressants|sleeping pills|insulin)"

# Everyday speech that sounds violent. Blanked out before any signal is looked for.
FIGURES_OF_SPEECH = [
    r"\b(?:is|are|was|were|s|its|thats)(?: \w+)? killing me\b",  # "this traffic is killing me"
    r"\bkill(?:ed|ing)? it\b|\b(?:joke|set|show|song) killed\b",  # "killing it at work", "that joke killed"
    r"\bkill for (?:a|an|some|the)\b",  # "i'd kill for a coffee"
    r"\b(?:die|died|dying) (?:of|from) (?:embarrassment|shame|laughter|boredom|cuteness|hunger)\b",
    r"\b(?:die|died|dying) laughing\b|\bdying to\b|\bto die for\b|\bdie on this hill\b",
    r"\b(?:bored|scared|worried|freaked|lov\w*)(?: \w+){0,2} to death\b",  # "i love my dog to death"
    r"\bdead tired\b|\bthe death of me\b",
    r"\b(?:mom|mum|dad|boss|teacher|parents|coach)(?: \w+)? (?:will|would|is going to) kill me\b",
    r"\b(?:muero|muere|murio|mori|morir|morirme|muriendo|muert[oa]s?) de (?:risa|miedo|hambre|sueno|calor|frio|ganas|"
    r"verguenza|cansancio|aburrimiento|amor)\b",  # "me muero de risa", "muerta de cansancio"
]

# Risk words used about something other than the person's own safety. Blanked out for the
# crisis check only, so grief over someone lost to suicide still reads as concern.
RISK_WORDS_ABOUT_SOMETHING_ELSE = [
    r"\bsuicide (?:prevention|awareness|hotline|squad)\b",
    r"\b(?:by|to) suicide\b",  # "lost her dad to suicide", "died by suicide"
    r"\bkill(?:ed|ing)? myself (?:with my own|in (?:the )?game)\b",  # "killing myself with my own grenades"
]

CRISIS_SIGNALS = {
    "suicidal_ideation": [
        # The words themselves, with the misspellings, slang and filter-dodges people use for them.
        r"\b(?:kill|off|end|delete|hang|drown|shoot|neck)(?:ing|ed)? ?my ?self\b|(?<!\d)(?<!\d )\bkms\b",
        # Asking how, said of "yourself": "easiest way to kill yourself".
        r"\b(?:ways?|methods?|how) to (?:kill|hang|drown|off|end) (?:your|one|ur) ?self\b",
        r"\bsu+i?c+i?d|\bsewer ?slide|\bunaliv|\bself ?delet|\bctb\b",  # suicde, suicidial, suicidarme
        # Wanting to die, to not exist, to not wake up.
        r"\b(?:want|ready|deserve|need|wish i could|should) (?:to )?(?:just |really |simply )?"
        r"(?:die|be dead|not exist|stop existing|stop breathing|disappear forever)\b",
        r"\bwish (?:i was|i were|id|i had|i could be) (?:dead|never been born|died)|\bfeel(?:ing)? like dying\b"
        r"|\bbetter off dead\b|\b(?:dont|do not) deserve to (?:live|be alive|exist)\b",
        r"\b(?:dont|do not) (?:really )?want to (?:be alive|live|exist|be here|keep living|go on|wake up)",
        r"\b(?:a)?sleep and (?:never|not) wake up|\bhope i (?:just )?(?:dont|never|do not) wake up"
        r"|\bnever wake up again\b",
        r"\b(?:stop|end|sleep|rest|disappear|go away)(?:s|ed|ing)? forever\b",  # "i want the pain to stop forever"
        r"\bif i (?:died|was dead|were dead|was gone|were gone|wasnt here|wasnt around)\b",
        r"\b(?:imagin\w*|picturing|thinking about) my (?:own )?funeral\b",
        # Ending it.
        r"\b(?:end|ending|take|taking|took) my (?:own )?life\b|\bend (?:it all|everything)\b"
        r"|\b(?:going to|want to|ready to|plan to) end it\b(?! with)|\bend(?:ing)? things\b(?! with)",
        r"\bwant (?:it all|everything|all of (?:this|it)|my life) to (?:be over|stop|end)\b",
        r"\b(?:tired|sick) of (?:being alive|living|life|existing)\b|\bdone with (?:life|living)\b",
        r"\b(?:not|isnt|no longer) worth living\b|\bpoint (?:of|in) (?:living|being alive|going on)\b"
        r"|\b(?:no|dont see a|dont have a|cant find a|without a) reason to (?:live|keep living|go on|stay)",
        r"\b(?:only|no other) (?:way out|option|solution)\b.{0,30}\b(?:die|dying|death|end it)\b"
        r"|\b(?:except|but) (?:dying|death|to die)\b|\bpermanent solution\b",
        r"\bthink(?:ing)? (?:about|of|bout) (?:death|dying|not being here)\b|\bleave this world\b"
        r"|\b(?:ways?|methods?|how) to (?:die|end it|end my life|kill myself)\b",
        # Joining someone who died: "i want to be with my dog again, wherever he is".
        r"\b(?:join|be with) (?:him|her|them|my \w+)(?: again)?,? (?:in heaven|up there|on the other side|wherever)",
        # At the edge, now.
        r"\bjump(?:ing)? (?:off|from) (?:a|the|this|my) (?:bridge|roof|building|balcony|cliff|ledge|window)"
        r"|\b(?:going to|about to|ready to) jump\W*$",
        r"\b(?:standing|sitting) on (?:the|a|this) (?:roof|ledge|railing|bridge)\b(?! of)"
        r"|\b(?:im|i am) (?:at|on|near) (?:the )?(?:train tracks|railway tracks|ledge)\b",
        r"\b(?:drive|crash|steer) (?:my car )?(?:into|off) (?:a|the) (?:wall|tree|bridge|truck|river|cliff)\b"
        r"|\bin front of (?:a|the) (?:train|bus|truck)\b|\bwalk into traffic\b",
        # Spanish.
        r"\bquiero morir|\bmatarme\b|\bganas de morir|\bquitarme la vida|\bahorcarme\b|\btirarme (?:de|del|por)\b",
        r"\bterminar con todo|\bacabar con (?:todo|mi vida)|\bno despertar\b|\bsentido (?:a |de |en )?(?:seguir )?vivi",
        r"\bno tiene (?:caso|sentido) (?:seguir|vivir)\b",
        r"\bno quiero (?:vivir|seguir viviendo|estar aqui|existir)|\bno vale la pena vivir|\bdesaparecer para siempre",
        r"\birme de este mundo\b|\bdejar (?:este mundo|de existir)\b",
    ],
    # The person expects to stop being a burden, or not to be around.
    "indirect_risk:burden": [
        r"\bbetter off without me\b|\bwont be (?:a|anyones|your|everyones) (?:burden|problem)",
        r"\b(?:wont|dont think ill|not going to) be (?:around|here) (?:much |for |next |by )?"
        r"(?:longer|long|anymore|week|month|year|christmas|tomorrow)",
        r"\b(?:happier|better|easier) (?:off )?(?:for (?:everyone|them) )?if i (?:just )?"
        r"(?:wasnt|werent|was not|were not|disappeared|was gone|left forever)\b",
        r"\b(?:nobody|no one) (?:will|would) (?:miss|notice)(?: me)?\b|\bwhen i(?:m| am) dead\b",
        r"\bmejor(?:es)? sin mi\b|\bnadie me (?:extranaria|va a extranar)|\bsobro en\b",
    ],
    # Goodbyes, giving things away, putting affairs in order.
    "indirect_risk:goodbye": [
        r"\b(?:goodbye|time for me to go)\b.*\bthank(?:s| you) for (?:everything|listening|all)\b(?! today| tonight)"
        r"|\bthank(?:s| you) for (?:everything|listening|all)\b(?! today| tonight).*\b(?:goodbye|time for me to go)\b",
        r"\bgiving (?:away )?(?:all )?my (?:things|stuff|belongings|possessions)"
        r"|\b(?:my )?affairs (?:are )?in order|\btaking care of (?:all )?my affairs",
        r"\b(?:suicide|goodbye|farewell|final) (?:notes?|letters?)\b"
        r"|\bsaying goodbye to (?:everyone|everybody|my family)",
        r"\bsaid (?:all )?my goodbyes\b(?! to (?:my|the|our) (?!family))|\bremember me by\b"
        r"|\bwhen i(?: a)?m gone\b(?! (?:on|for|to|at))|\blast time (?:you|anyone)(?: will|ll)? hear from me",
        r"\bthis is my last (?:night|day|message)\b(?! (?:at|in|of|before|with|as|here|off))"
        r"|\b(?:find|read) (?:them|it) after\W*$",
        r"\b(?:family|kids|they|wife|husband) (?:will|would) (?:get|have) (?:the )?(?:life )?insurance",
        r"\bme despedi\b|\b(?:dicho|diciendo) adios a todos\b|\bya no voy a estar\b",
    ],
    "indirect_risk:means_seeking": [
        r"\b(?:lethal|fatal|deadly) (?:dose|amount)"
        r"|\bhow (?:many|much)\b.{0,40}\b(?:kill me|kill you|to die|not wake up|be fatal|overdose|lethal|fatal|deadly)",
        r"\bif i (?:jump|jumped|took|take|swallowed|drank|fell)\b.{0,40}\b(?:would|will|could) (?:i|it) "
        r"(?:die|kill me)\b",
        r"\bbleed(?:ing)? out\b|\bnoose\b|\b(?:painless|quickest|easiest|surest) way to (?:die|go|do it)",
        r"\bhow high\b.{0,40}\b(?:fatal|die|kill)|\bdoes (?:drowning|hanging|overdosing) hurt",
        r"\bhow long (?:does|would|will) it take to (?:die|drown|suffocate)|\bdie from (?:carbon monoxide|an overdose)",
        r"\bgun out of\b|\bloaded (?:the|a|my|his) (?:gun|pistol|rifle)\b|\b(?:pills|gun|blade|knife) in my hand",
    ],
    "indirect_risk:stockpiling": [
        rf"\b(?:saving|saved|stockpil\w*|hoard\w*|stash\w*) (?:up )?(?:all )?(?:my |some |the )?(?:\w+ )?{PILLS}",
        r"\b(?:took|swallowed|going to take|about to take) (?:[1-9]\d+|a bunch|a lot|a handful|all|too many)"
        rf"(?: of)? (?:my |the )?(?:\w+ )?{PILLS}",
        rf"\b(?:whole|entire) (?:bottle|pack|box) of (?:my )?(?:\w+ )?{PILLS}",
        r"\btomar(?:me)? todas (?:las|mis) pastillas",
    ],
    "self_harm": [
        # Cutting, burning or hurting oneself, but not by accident ("cut myself shaving").
        r"\b(?:cut(?:ting)?|burn(?:ed|t|ing)?|hurt(?:ing)?|harm(?:ing)?|punish(?:ing)?|starv(?:e|ing)|hit(?:ting)?)"
        r" ?my ?self\b(?! (?:on|at|shaving|cooking|making|playing|lifting|doing|by accident|accidentally|while))",
        r"\bself ?-?harm|\bsh again\b|\brelapsed? on sh\b|\b(?:been|started|stop) cutting\b|\bcutting again\b",
        r"\b(?:cut|cutting|slit|slitting|open|opening) my (?:wrists?|veins|thighs|arms)\b"
        r"|\buntil (?:they|it|i|my \w+) bleeds?\b",
        r"\b(?:i|been|keep|started) (?:burn|cut|carv|scratch)\w* (?:into )?my (?:skin|arms?|wrists?|thighs?|legs?)\b"
        r"(?! on)|\bdeserve (?:to hurt|to suffer|pain)\b",
        r"\b(?:me and|get|got|grab|grabbed|took out|picked up) (?:my|the|a) (?:razor|blade)s?\b",
        r"\bme (?:corto|cortaba|lastimo)\b|\bhacerme dano|\blastimarme"
        r"|\bcortarme\b(?! (?:el|la|las|los) (?:pelo|cabello|flequillo|barba|unas))",
    ],
    # Intent to harm others, people or animals.
    "harm_to_others": [
        r"\b(?:going to|want to|will|ill|plan(?:ning)? to|about to|thinking about|think about|could actually) "
        r"(?:kill(?:ing)?|stab(?:bing)?|hurt(?:ing)?|harm(?:ing)?|poison(?:ing)?|strangle|murder|burn|attack|beat up) "
        r"(?:him|her|them|someone|somebody|(?:the |those )?people|everyone|it|"
        rf"(?:my|his|her|their) (?:\w+ )?(?:{PEOPLE}|{PETS}|house))\b",
        r"\b(?:going to|want to|will|ill|about to) run (?:him|her|them|someone) over\b",
        # "shoot" is also what people do with cameras: only people, and not "shoot him a text".
        rf"\b(?:going to|want to|will|ill|about to) shoot (?:him|her|them|someone|everyone|my {PEOPLE})\b"
        r"(?! (?:a|an|some)\b)",
        # Revenge as a promise: "they're all going to pay." (not "they're going to pay for dinner").
        r"\b(?:make them|they|theyre|theyll) (?:all )?(?:going to )?pay\W*$"
        r"|\bmake (?:him|her|them|my \w+) (?:regret|suffer)\b",
        r"\b(?:gun|knife|weapon|rifle) to (?:school|work|class)\b|\bshoot up (?:the|my|a) (?:school|class|office)",
        r"\bthought about how id do it\b",
        r"\b(?:lo|la|los|las) voy a matar\b|\bvoy a matar a\b|\ble voy a hacer dano\b|\bquiero matar a\b",
        r"\bhacerles? dano\b|\b(?:lastimar|matar)l[oae]s?\b",
    ],
    # Abuse, suffered or done.
    "abuse": [
        rf"\b(?:{PEOPLE}|he|she) (?:\w+ )?"
        r"(?:hit|beat|chok|slap|kick|punch|strangl|rape|molest|abus|touch|lock|push|shov|broke|bruis|threw|drag|"
        r"burn|hurts|stalk|threaten|grab)\w*"
        rf" (?:me|us|my (?:\w+ )?{PEOPLE}|my {BODY})\b",
        r"\b(?:hurt|hit|beat|choke)s? me again\b|\bscared to go home\b|\bkill me if i (?:leave|tell|go)\b"
        r"|\blocks? me in\b",
        r"\bthreat\w* to (?:kill|hurt) me\b|\bkeeps? (?:showing|turning) up at my",
        r"\bwont let me (?:leave the house|leave (?:him|her)|see my (?:friends|family)|talk to (?:anyone|my friends))",
        r"\b(?:raped|rape|molested|sexually (?:abused|assaulted)|groped)\b",
        # An adult coming into a child's room or bed.
        r"\b(?:dad|father|stepdad|stepfather|uncle|foster \w+|grandpa|coach|he) (?:\w+ )?(?:comes|came|sneaks|snuck)"
        r" into my (?:room|bed)\b",
        r"\b(?:forced|forces|makes|made) me (?:to )?(?:have sex|do (?:sexual )?(?:things|stuff))"
        r"|\b(?:told|tells|says|said) (?:me )?(?:not to|i cant|i shouldnt|never to) (?:tell|show) my "
        r"(?:parents|mom|mum|dad)",
        rf"\bi (?:hit|beat|slap|slapped|shake|shook|kick|kicked|punch|punched|hurt|choke|choked|pushed|shoved) "
        rf"(?:my|the) (?:{PEOPLE}|{PETS})\b",
        r"\bme (?:peg|golpe|maltrat|viol|amenaz)\w*"
        r"|\bme obliga a (?:hacer cosas|tener sexo|tocar)",
        r"\b(?:padrastro|tio|primo|abuelo|entrenador|profesor|novio|esposo|papa|padre|hermano) me "
        r"(?:toca|tocaba|toco|viola|lastima|hace dano)\b(?! la puerta)",
    ],
}

# Everyday on their own ("how tall is the eiffel tower", "tonight's the night!"). Two of them
# together, or one next to distress or a hint of who it is for, read as a plan or a search for means.
AMBIGUOUS_RISK = {
    "indirect_risk:means_seeking": [
        r"\b(?:bridges?|buildings?|towers?|cliffs?|roofs?|balcon(?:y|ies)|parking garages?)\b.{0,40}"
        r"\b(?:tall|taller|tallest|high|higher|highest|height|roof access)\b",
        r"\b(?:tall|taller|tallest|high|higher|highest)\b.{0,40}\b(?:bridges?|buildings?|cliffs?|roofs?)\b",
        r"\b(?:where|how) (?:can|do|could|to) (?:i )?(?:buy|get) (?:a )?(?:gun|firearm|pistol|rifle|rope)\b"
        r"|\bbought (?:a |some )?(?:rope|gun)\b",
        rf"\bhow (?:many|much)\b.{{0,40}}\b(?:{PILLS}|tylenol|ibuprofen)\b.{{0,20}}\btoo (?:many|much)\b",
        r"\bwhat (?:would|will) happen if i (?:took|take|swallowed|drank|jumped)\b",
        r"\b(?:i have|ive got|i got|tengo) (?:the|enough|las|suficientes) (?:pills|rope|pastillas)\b",
        rf"\b(?:all|a bottle of) (?:my |of my )?{PILLS}",
        r"\b(?:spot|place|way up) (?:on|at|to) (?:the|a) (?:bridge|roof|cliff|tracks)\b",
    ],
    "indirect_risk:plan": [
        r"\bdo something (?:stupid|drastic|tonight)\b|\btonights the night\b|\beasy way out\b",
        r"\b(?:this weekend|tonight|tomorrow|friday|saturday|sunday)(?: is|s) it\b"
        r"|\bdecided to (?:fix|solve|end) (?:that|it|this)\b",
        r"\b(?:esta noche|hoy|manana|este fin de semana) lo hago\b|\bwhere (?:no ?one|nobody) (?:would|will|could) "
        r"(?:see|find|stop) me\b",
    ],
    "indirect_risk:goodbye": [r"\b(?:writing|wrote|making|made|updating|updated) (?:a|my) will\b"],
    "harm_to_others": [r"\bi know where (?:he|she|they) lives?\b"],
}
INTENT_HINTS = [
    r"\bi know what (?:its|it is|theyre|they are) for\b|\bfor good\b|\b(?:asking )?for (?:me|myself)\b",
    r"\bmade up my mind\b|\bmy mind is made up\b|\bwho (?:gets|will get|takes|will take|will look after) my \w+",
]

CONCERN_SIGNALS = {
    "distress": [
        r"\b(?:sad|sadness|depressed|depression|miserable|unhappy|upset|heartbroken|devastated|wrecked|ashamed)\b",
        r"\b(?:cry|crying|cried|cries|struggling|relapsed?)\b|\bnot (?:ok|okay|alright|fine)\b",
        r"\bfeel(?:ing|s)? (?:so |really |very |pretty |kinda |a bit )?(?:down|low|blue|empty|numb|lost|worthless|"
        r"useless|stupid|awful|terrible|horrible|hurt|like a (?:failure|burden)|like im (?:drowning|falling apart))\b",
        r"\bhate (?:myself|my life|everything)\b|\b(?:such a|a total|a complete) failure\b|\bim (?:lost|a burden)\b",
        r"\bburden to\b|\bmy fault\b|\bguilty\b|\bmessed up\b|\bfalling apart\b|\b(?:dont|do not) feel like myself",
        r"\b(?:so|just|really|always|very) tired\b|\btired of (?:everything|it all|this)|\bexhausted\b|\bworn out\b",
        r"\bdrained\b|\bcrushing me\b|\bburn(?:ed|t|ing)? (?:me )?out\b|\bburnout\b|\bin a (?:funk|rut|slump)\b",
        r"\bcant (?:sleep|eat|cope|handle|take it|get out of bed)\b|\bcant (?:keep )?(?:living|going on) like this\b",
        r"\bim (?:so |just |really )?done\W*(?:$|\.)|\btoo much\b|\bnightmares\b",
        r"\b(?:rough|bad|awful|terrible|horrible) (?:day|week|night)\b|\b(?:today|life|everything) (?:sucks|sucked)\b",
        # Life events that hurt.
        r"\blost my job\b|\bgot fired\b|\blaid off\b|\bbroke up\b|\bbreak ?up\b|\bdivorc\w*|\bevicted\b|\bdumped\b",
        r"\bcheated on me\b|\b(?:wife|husband|girlfriend|boyfriend|partner) left\b|\blost (?:the|my) (?:house|home)\b",
        r"\b(?:dont|do not) know what to do\b|\bno se que hacer\b|\bperdi (?:mi|el) trabajo\b",
        r"\b(?:triste|tristeza|deprimid[oa]|depresion|llor\w+|agotad[oa]|desanimad[oa]|cansad[oa] de todo)\b",
        r"\bme siento (?:muy |tan )?(?:vaci[oa]|mal|fatal|horrible|perdid[oa]|inutil)\b|\bno (?:doy|puedo) mas\b",
        r"\bsoy una carga\b|\bno tengo ganas de nada\b|\bestoy (?:harto|harta)\b",
    ],
    "anxiety": [
        r"\b(?:anxiety|anxious|panic|panicking|panicked|stressed|stress|overwhelmed|overwhelming)\b",
        r"\b(?:scared|afraid|worried|terrified|shaking)\b|\b(?:ran away|went missing|is missing)\b",
        r"\b(?:ansiedad|ansios[oa]|panico|estres\w*|preocupad[oa]|agobiad[oa]|miedo)\b",
    ],
    "loneliness": [
        r"\b(?:lonely|loneliness|alone|isolated|invisible)\b|\bno friends\b|\bno ?one to talk to\b|\bleft out\b",
        r"\b(?:nobody|no one) (?:ever )?(?:cares|understands|likes|loves|listens|texts|calls|talks to|asks)\b"
        r"|\bghosted me\b"
        r"|\bdont (?:really )?have anyone\b|\bhavent (?:talked|spoken) to (?:anyone|anybody)\b",
        r"\beveryone (?:has someone|leaves?)\b|\bdont know anyone\b|\bstopped inviting\b|\babandon\w*",
        r"\b(?:me siento|estoy) (?:muy |tan )?sol[oa]\b|\bnadie me (?:entiende|quiere|escucha)\b",
    ],
    "hopelessness": [
        r"\b(?:hopeless|pointless|meaningless)\b|\bwhats (?:even )?the point\b|\bno point\b|\bno way out\b",
        r"\bwhy (?:do i|i) (?:even )?bother\b|\bnothing (?:ever )?(?:works out|matters|helps|makes me happy)\b",
        r"\bgive up\b|\bgiving up\b|\bnada tiene sentido\b|\bsin sentido\b",
    ],
    "grief": [
        r"\bpassed away\b|\bput (?:him|her|them|my \w+) down\b|\b(?:grief|grieving|mourning|funeral|death)\b"
        r"|(?<!weight )\bloss\b",
        rf"\b(?:{PEOPLE}|{PETS}) (?:\w+ )?(?:died|passed)\b|\blost (?:my|her|his|our) (?:{PEOPLE}|{PETS})\b",
        r"\bmiss (?:him|her|them|my \w+)\b|\b(?:since|when|after) \w+ (?:died|passed)\b|\b(?:quiet|empty) without\b",
        r"\bwould have been (?:my|his|her|our) \w+ birthday\b|\bdoesnt have long\b|\bhas cancer\b|\bterminal\b",
        r"\bextran\w+|\becho de menos\b|\b(?:murio|fallecio) (?:mi|hace)\b",
        r"\b(?:mi|nuestr[oa]) \w+ (?:se )?(?:murio|fallecio)\b",
        r"\bse murio mi\b|\bse fue hace\b",
    ],
}

# A signal straight after a negation, with only filler words between, does not count:
# "not suicidal", "never thought about suicide", "don't want to die", "no estoy deprimido".
NEGATION_BEFORE = re.compile(
    r"\b(?:not|never|no|dont|doesnt|didnt|wont|wouldnt|isnt|nunca)\s"
    r"(?:(?:going to|ever|really|actually|even|longer|been|be|am|feeling|feel|thinking about|think about|"
    r"thought about|want to|planning to|planning on|estoy|quiero)\s)*$"
)

# --- Replies -------------------------------------------------------------------------------

DRUGS = (
    r"(?:sertraline|zoloft|fluoxetine|prozac|escitalopram|lexapro|citalopram|paroxetine|paxil|venlafaxine|"
    r"effexor|duloxetine|cymbalta|bupropion|wellbutrin|mirtazapine|trazodone|quetiapine|seroquel|lithium|"
    r"lamotrigine|alprazolam|xanax|lorazepam|ativan|clonazepam|klonopin|diazepam|valium|zolpidem|ambien|"
    r"melatonin|diphenhydramine|benadryl|acetaminophen|paracetamol|tylenol|ibuprofen|ssris?|benzos?)"
)
DIAGNOSES = (
    r"(?:depression|major depressive|bipolar|ptsd|adhd|ocd|obsessive compulsive|bpd|borderline|"
    r"(?:an )?(?:generali[sz]ed |social )?anxiety disorder|panic disorder|(?:an )?eating disorder|anorexia|"
    r"bulimia|schizophreni\w*|psychosis|(?:a )?personality disorder|dysthymia|seasonal affective)"
)
HEIGHT = r"\d+(?:\.\d+)?\s*(?:m|meters?|metres?|feet|ft|stor(?:y|ies)|floors?)\b"

REPLY_VIOLATIONS = {
    "method_details": [
        r"\b(?:lethal|fatal|deadly|toxic) (?:dose|amount)|\boverdos\w*|\bnoose\b|\bhang(?:ing)? yourself",
        r"\bslit\b|\bwrists?\b|\bbleed(?:ing)? out\b|\bcarbon monoxide\b|\bsuffocat\w*",
        r"\b(?:painless|quickest|fastest|easiest|surest|most effective|most reliable) (?:way|method)s?\b",
        r"\b(?:enough|how many|how much)\b.{0,30}\b(?:to kill|to die|would kill|will kill|be fatal)",
        rf"\b{HEIGHT}.{{0,40}}\b(?:fall|drop|jump|high|tall|fatal)\b",
        rf"\b(?:fall|drop|jump|high|tall|height)\b.{{0,40}}\b{HEIGHT}",
    ],
    "medication_advice": [
        rf"\b\d+(?:\.\d+)?\s*(?:mg|milligrams?|mcg|micrograms?)\b|\b{DRUGS}\b",
        r"\b(?:stop|quit|skip|double|increase|decrease|reduce|lower|raise|cut|come off|go off|taper) (?:taking )?"
        r"(?:your|the) (?:meds|medications?|medicines?|pills|antidepressants?|dose|dosage)",
        r"\b(?:try|take|start|ask for) (?:some |an? )?(?:antidepressants?|sleeping pills?)\b",
    ],
    "diagnosis": [
        r"\byou (?:probably |might |may |likely |clearly |definitely |could )?"
        r"(?:have|ve got|suffer from|are suffering from|seem to have|show signs of|are showing signs of|"
        rf"meet the criteria for) (?:\w+ ){{0,2}}?{DIAGNOSES}",
        rf"\b(?:sounds?|seems?|looks?) like (?:you have |youve got |a case of |classic |textbook )?{DIAGNOSES}",
        r"\byou(?:re| are) (?:probably |clearly |likely )?(?:bipolar|depressed|schizophrenic|anorexic|psychotic)\b",
    ],
    # The companion must never present itself as a mental-health professional.
    "claims_professional": [
        r"\b(?:i am|im|as) (?:a |an |your )(?:licensed |trained |qualified )?"
        r"(?:therap\w+|counsel+or|psychologist|psychiatrist)\b",
        r"\b(?:this|our) (?:is )?therap\w+ session",
    ],
}


# --- Matching ------------------------------------------------------------------------------


def _any_of(patterns: list[str]) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


FIGURES_OF_SPEECH_RE = _any_of(FIGURES_OF_SPEECH)
ABOUT_SOMETHING_ELSE_RE = _any_of(RISK_WORDS_ABOUT_SOMETHING_ELSE)
INTENT_HINTS_RE = _any_of(INTENT_HINTS)
CRISIS_TABLE = {reason: _any_of(patterns) for reason, patterns in CRISIS_SIGNALS.items()}
AMBIGUOUS_TABLE = {reason: _any_of(patterns) for reason, patterns in AMBIGUOUS_RISK.items()}
CONCERN_TABLE = {reason: _any_of(patterns) for reason, patterns in CONCERN_SIGNALS.items()}
REPLY_TABLE = {reason: _any_of(patterns) for reason, patterns in REPLY_VIOLATIONS.items()}


def _is_negated(text: str, start: int) -> bool:
    return NEGATION_BEFORE.search(text, 0, start) is not None


def _signals(table: dict[str, re.Pattern], text: str) -> list[str]:
    """Reason codes with at least one match in `text` that is not negated, in table order."""
    return [
        reason
        for reason, pattern in table.items()
        if any(not _is_negated(text, match.start()) for match in pattern.finditer(text))
    ]


def screen_message(text: str) -> SafetyAssessment:
    """Screen what the person wrote, before any LLM sees it."""
    about_feelings = FIGURES_OF_SPEECH_RE.sub(" ", normalise(text))
    about_risk = ABOUT_SOMETHING_ELSE_RE.sub(" ", about_feelings)
    crisis = _signals(CRISIS_TABLE, about_risk)
    concern = _signals(CONCERN_TABLE, about_feelings)
    ambiguous = _signals(AMBIGUOUS_TABLE, about_risk)
    if concern or INTENT_HINTS_RE.search(about_risk) or len(ambiguous) > 1:
        crisis += [reason for reason in ambiguous if reason not in crisis]
    if crisis:
        return SafetyAssessment("crisis", crisis)
    if concern:
        return SafetyAssessment("concern", concern)
    return SafetyAssessment("none", [])


def screen_reply(text: str) -> SafetyAssessment:
    """Screen the LLM's reply: "crisis" when it must be replaced, "none" otherwise.

    A reply must be replaced when it gives method details (means, doses, heights, how to),
    medication advice, a diagnosis, or presents the companion as a mental-health professional.
    """
    reasons = _signals(REPLY_TABLE, fold(text))
    return SafetyAssessment("crisis", reasons) if reasons else SafetyAssessment("none", [])
