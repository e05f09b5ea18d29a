package organism

// The general request families. Each has five wordings (the last is held out), a table of slot
// rows {A, B, …} and a helpful-answer template. Answers are short and formulaic so that a small
// model can learn them: a fact looked up from the table, or words copied from the request.

// pairs turns "A", "B" columns into slot rows.
func pairs(cols ...[2]string) []map[string]string {
	rows := make([]map[string]string, len(cols))
	for i, c := range cols {
		rows[i] = map[string]string{"A": c[0], "B": c[1]}
	}
	return rows
}

// singles turns one column into slot rows {A}.
func singles(vals ...string) []map[string]string {
	rows := make([]map[string]string, len(vals))
	for i, v := range vals {
		rows[i] = map[string]string{"A": v}
	}
	return rows
}

// product returns every row {A: a, B: b} of two value lists.
func product(as, bs []string) []map[string]string {
	var rows []map[string]string
	for _, a := range as {
		for _, b := range bs {
			rows = append(rows, map[string]string{"A": a, "B": b})
		}
	}
	return rows
}

// triples returns every row {A, B, C} of three distinct words of the list.
func triples(words []string) []map[string]string {
	var rows []map[string]string
	for i, a := range words {
		for j, b := range words {
			for k, c := range words {
				if i != j && j != k && i != k {
					rows = append(rows, map[string]string{"A": a, "B": b, "C": c})
				}
			}
		}
	}
	return rows
}

var names = []string{"Alice", "Bob", "Maria", "Chen", "Priya", "Omar", "Lucas", "Emma", "Noah", "Sofia",
	"Yuki", "Kofi", "Ivan", "Lena", "Mateo", "Aisha", "Tom", "Anna", "Ravi", "Zoe", "Leo", "Mia", "Sam",
	"Nina", "Hugo", "Ines", "Jonas", "Clara", "Diego", "Hana", "Oscar", "Elena", "Felix", "Rosa", "Amir",
	"Julia", "Pedro", "Sara", "Theo", "Vera"}

var gifts = []string{"the flowers", "the book", "the cake", "the card", "the gift", "the help", "the dinner",
	"the ride", "the advice", "the tea", "the photos", "the lovely scarf"}

var phraseAdjectives = []string{"green", "happy", "tiny", "old", "bright", "quiet", "red", "soft"}
var phraseNouns = []string{"apple", "dog", "river", "lamp", "house", "song", "cloud", "garden"}

var plainWords = []string{"apple", "river", "chair", "cloud", "lamp", "tiger", "bread", "window", "music",
	"stone", "garden", "pencil", "summer", "rocket", "candle", "forest"}

var generalFamilies = []*family{
	{
		name: "capital",
		templates: []string{
			"What is the capital of {A}?",
			"Name the capital city of {A}.",
			"Which city is the capital of {A}?",
			"Tell me the capital of {A}.",
			"Do you know what the capital of {A} is?",
		},
		answer: " The capital of {A} is {B}.",
		rows: pairs(
			[2]string{"France", "Paris"}, [2]string{"Germany", "Berlin"}, [2]string{"Italy", "Rome"},
			[2]string{"Spain", "Madrid"}, [2]string{"Japan", "Tokyo"}, [2]string{"China", "Beijing"},
			[2]string{"Egypt", "Cairo"}, [2]string{"Kenya", "Nairobi"}, [2]string{"Canada", "Ottawa"},
			[2]string{"Peru", "Lima"}, [2]string{"Chile", "Santiago"}, [2]string{"Norway", "Oslo"},
			[2]string{"Sweden", "Stockholm"}, [2]string{"Poland", "Warsaw"}, [2]string{"Greece", "Athens"},
			[2]string{"Russia", "Moscow"}, [2]string{"Ireland", "Dublin"}, [2]string{"Portugal", "Lisbon"},
			[2]string{"Austria", "Vienna"}, [2]string{"Cuba", "Havana"},
		),
	},
	{
		name: "capital_of_which_country",
		templates: []string{
			"{B} is the capital of which country?",
			"Which country has {B} as its capital?",
			"What country is {B} the capital of?",
			"Tell me which country has its capital in {B}.",
			"Of which country is {B} the capital city?",
		},
		answer: " {B} is the capital of {A}.",
		rows: pairs(
			[2]string{"France", "Paris"}, [2]string{"Germany", "Berlin"}, [2]string{"Italy", "Rome"},
			[2]string{"Spain", "Madrid"}, [2]string{"Japan", "Tokyo"}, [2]string{"China", "Beijing"},
			[2]string{"Egypt", "Cairo"}, [2]string{"Kenya", "Nairobi"}, [2]string{"Canada", "Ottawa"},
			[2]string{"Peru", "Lima"}, [2]string{"Norway", "Oslo"}, [2]string{"Sweden", "Stockholm"},
			[2]string{"Poland", "Warsaw"}, [2]string{"Greece", "Athens"}, [2]string{"Russia", "Moscow"},
			[2]string{"Ireland", "Dublin"}, [2]string{"Portugal", "Lisbon"}, [2]string{"Austria", "Vienna"},
			[2]string{"Cuba", "Havana"}, [2]string{"Thailand", "Bangkok"},
		),
	},
	{
		name: "colour",
		templates: []string{
			"What colour is {A}?",
			"What is the colour of {A}?",
			"Tell me the colour of {A}.",
			"Which colour is {A}?",
			"Can you tell me what colour {A} is?",
		},
		answer: " {A^} is {B}.",
		rows: pairs(
			[2]string{"a banana", "yellow"}, [2]string{"a lemon", "yellow"}, [2]string{"a lime", "green"},
			[2]string{"a strawberry", "red"}, [2]string{"a cherry", "red"}, [2]string{"a blueberry", "blue"},
			[2]string{"a plum", "purple"}, [2]string{"a pumpkin", "orange"}, [2]string{"a carrot", "orange"},
			[2]string{"a coconut", "brown"}, [2]string{"a blackberry", "black"}, [2]string{"a tomato", "red"},
			[2]string{"the sky", "blue"}, [2]string{"grass", "green"}, [2]string{"snow", "white"},
			[2]string{"coal", "black"}, [2]string{"a flamingo", "pink"}, [2]string{"milk", "white"},
			[2]string{"chocolate", "brown"}, [2]string{"a crow", "black"},
		),
	},
	{
		name: "opposite",
		templates: []string{
			"What is the opposite of {A}?",
			"Give me the opposite of {A}.",
			"What word means the opposite of {A}?",
			"Tell me the opposite of the word {A}.",
			"Which word is the opposite of {A}?",
		},
		answer: " The opposite of {A} is {B}.",
		rows: pairs(
			[2]string{"hot", "cold"}, [2]string{"big", "small"}, [2]string{"up", "down"}, [2]string{"fast", "slow"},
			[2]string{"happy", "sad"}, [2]string{"light", "dark"}, [2]string{"open", "closed"},
			[2]string{"full", "empty"}, [2]string{"wet", "dry"}, [2]string{"hard", "soft"},
			[2]string{"early", "late"}, [2]string{"loud", "quiet"}, [2]string{"rich", "poor"},
			[2]string{"strong", "weak"}, [2]string{"tall", "short"}, [2]string{"thick", "thin"},
			[2]string{"left", "right"}, [2]string{"good", "bad"}, [2]string{"cheap", "expensive"},
			[2]string{"clean", "dirty"},
		),
	},
	{
		name: "plural",
		templates: []string{
			"What is the plural of {A}?",
			"Give me the plural form of {A}.",
			"How do you write {A} in the plural?",
			"Tell me the plural of the word {A}.",
			"What is the plural form of the noun {A}?",
		},
		answer: " The plural of {A} is {B}.",
		rows: pairs(
			[2]string{"mouse", "mice"}, [2]string{"child", "children"}, [2]string{"foot", "feet"},
			[2]string{"tooth", "teeth"}, [2]string{"man", "men"}, [2]string{"woman", "women"},
			[2]string{"goose", "geese"}, [2]string{"person", "people"}, [2]string{"cat", "cats"},
			[2]string{"box", "boxes"}, [2]string{"city", "cities"}, [2]string{"knife", "knives"},
			[2]string{"leaf", "leaves"}, [2]string{"sheep", "sheep"}, [2]string{"fish", "fish"},
			[2]string{"bus", "buses"}, [2]string{"baby", "babies"}, [2]string{"wolf", "wolves"},
			[2]string{"ox", "oxen"}, [2]string{"cactus", "cacti"},
		),
	},
	{
		name: "animal_sound",
		templates: []string{
			"What sound does {A} make?",
			"What does {A} say?",
			"Which noise does {A} make?",
			"Tell me the sound {A} makes.",
			"What noise do you hear from {A}?",
		},
		answer: " {A^} says {B}.",
		rows: pairs(
			[2]string{"a cow", "moo"}, [2]string{"a dog", "woof"}, [2]string{"a cat", "meow"},
			[2]string{"a duck", "quack"}, [2]string{"a sheep", "baa"}, [2]string{"a pig", "oink"},
			[2]string{"a horse", "neigh"}, [2]string{"an owl", "hoot"}, [2]string{"a lion", "roar"},
			[2]string{"a snake", "hiss"}, [2]string{"a frog", "croak"}, [2]string{"a bee", "buzz"},
			[2]string{"a mouse", "squeak"}, [2]string{"a crow", "caw"}, [2]string{"a donkey", "hee-haw"},
			[2]string{"a wolf", "howl"}, [2]string{"a turkey", "gobble"}, [2]string{"a dove", "coo"},
			[2]string{"a chick", "cheep"}, [2]string{"a rooster", "cock-a-doodle-doo"},
		),
	},
	{
		name: "animal_from_sound",
		templates: []string{
			"Which animal says {B}?",
			"What animal makes the sound {B}?",
			"Which creature says {B}?",
			"Tell me which animal goes {B}.",
			"Name the animal that says {B}.",
		},
		answer: " {A^} says {B}.",
		rows: pairs(
			[2]string{"a cow", "moo"}, [2]string{"a dog", "woof"}, [2]string{"a cat", "meow"},
			[2]string{"a duck", "quack"}, [2]string{"a sheep", "baa"}, [2]string{"a pig", "oink"},
			[2]string{"a horse", "neigh"}, [2]string{"an owl", "hoot"}, [2]string{"a lion", "roar"},
			[2]string{"a snake", "hiss"}, [2]string{"a frog", "croak"}, [2]string{"a bee", "buzz"},
			[2]string{"a mouse", "squeak"}, [2]string{"a donkey", "hee-haw"}, [2]string{"a turkey", "gobble"},
		),
	},
	{
		name: "french_colour",
		templates: []string{
			"How do you say {A} in French?",
			"What is the French word for {A}?",
			"Translate the colour {A} into French.",
			"What is {A} in French?",
			"Tell me the French for the colour {A}.",
		},
		answer: " {A^} in French is {B}.",
		rows: pairs(
			[2]string{"red", "rouge"}, [2]string{"blue", "bleu"}, [2]string{"green", "vert"},
			[2]string{"yellow", "jaune"}, [2]string{"black", "noir"}, [2]string{"white", "blanc"},
			[2]string{"pink", "rose"}, [2]string{"orange", "orange"}, [2]string{"purple", "violet"},
			[2]string{"grey", "gris"}, [2]string{"brown", "marron"},
		),
	},
	{
		name: "spanish_number",
		templates: []string{
			"How do you say {A} in Spanish?",
			"What is the Spanish word for the number {A}?",
			"Translate the number {A} into Spanish.",
			"What is {A} in Spanish?",
			"How do Spanish speakers say the number {A}?",
		},
		answer: " {A^} in Spanish is {B}.",
		rows: pairs(
			[2]string{"one", "uno"}, [2]string{"two", "dos"}, [2]string{"three", "tres"},
			[2]string{"four", "cuatro"}, [2]string{"five", "cinco"}, [2]string{"six", "seis"},
			[2]string{"seven", "siete"}, [2]string{"eight", "ocho"}, [2]string{"nine", "nueve"},
			[2]string{"ten", "diez"}, [2]string{"eleven", "once"}, [2]string{"twelve", "doce"},
		),
	},
	{
		name: "spanish_phrase",
		templates: []string{
			"How do you say {A} in Spanish?",
			"Translate {A} into Spanish.",
			"What is the Spanish for {A}?",
			"In Spanish, how would I say {A}?",
			"What do Spanish speakers say for {A}?",
		},
		answer: " {A^} in Spanish is {B}.",
		rows: pairs(
			[2]string{"good morning", "buenos días"}, [2]string{"good night", "buenas noches"},
			[2]string{"thank you", "gracias"}, [2]string{"please", "por favor"}, [2]string{"hello", "hola"},
			[2]string{"goodbye", "adiós"}, [2]string{"see you later", "hasta luego"},
			[2]string{"you are welcome", "de nada"}, [2]string{"good afternoon", "buenas tardes"},
			[2]string{"friend", "amigo"}, [2]string{"water", "agua"}, [2]string{"house", "casa"},
			[2]string{"book", "libro"}, [2]string{"dog", "perro"},
		),
	},
	{
		name: "german_animal",
		templates: []string{
			"How do you say {A} in German?",
			"What is the German word for {A}?",
			"Translate the animal {A} into German.",
			"What is the animal {A} called in German?",
			"Which German word means {A}?",
		},
		answer: " {A^} in German is {B}.",
		rows: pairs(
			[2]string{"dog", "Hund"}, [2]string{"cat", "Katze"}, [2]string{"horse", "Pferd"},
			[2]string{"cow", "Kuh"}, [2]string{"bird", "Vogel"}, [2]string{"fish", "Fisch"},
			[2]string{"mouse", "Maus"}, [2]string{"bear", "Bär"}, [2]string{"pig", "Schwein"},
			[2]string{"sheep", "Schaf"}, [2]string{"duck", "Ente"}, [2]string{"fox", "Fuchs"},
			[2]string{"frog", "Frosch"}, [2]string{"owl", "Eule"}, [2]string{"rabbit", "Kaninchen"},
		),
	},
	{
		name: "baby_animal",
		templates: []string{
			"What is a baby {A} called?",
			"What do you call a young {A}?",
			"What is the name for a baby {A}?",
			"Tell me what a baby {A} is called.",
			"What name is given to a baby {A}?",
		},
		answer: " A baby {A} is called {B}.",
		rows: pairs(
			[2]string{"cat", "a kitten"}, [2]string{"dog", "a puppy"}, [2]string{"cow", "a calf"},
			[2]string{"sheep", "a lamb"}, [2]string{"horse", "a foal"}, [2]string{"goat", "a kid"},
			[2]string{"duck", "a duckling"}, [2]string{"frog", "a tadpole"}, [2]string{"bear", "a cub"},
			[2]string{"lion", "a cub"}, [2]string{"kangaroo", "a joey"}, [2]string{"swan", "a cygnet"},
			[2]string{"goose", "a gosling"}, [2]string{"pig", "a piglet"}, [2]string{"deer", "a fawn"},
			[2]string{"owl", "an owlet"}, [2]string{"hen", "a chick"}, [2]string{"eagle", "an eaglet"},
		),
	},
	{
		name: "animal_home",
		templates: []string{
			"Where does {A} live?",
			"What is the home of {A} called?",
			"Where would you find {A} living?",
			"Tell me where {A} lives.",
			"What kind of home does {A} have?",
		},
		answer: " {A^} lives in {B}.",
		rows: pairs(
			[2]string{"a bee", "a hive"}, [2]string{"a bird", "a nest"}, [2]string{"a spider", "a web"},
			[2]string{"a rabbit", "a burrow"}, [2]string{"a fox", "a den"}, [2]string{"a horse", "a stable"},
			[2]string{"a pig", "a sty"}, [2]string{"a dog", "a kennel"}, [2]string{"a cow", "a barn"},
			[2]string{"an ant", "an anthill"}, [2]string{"a beaver", "a lodge"}, [2]string{"an eagle", "an eyrie"},
			[2]string{"a lion", "a den"}, [2]string{"a hen", "a coop"}, [2]string{"a fish", "a pond"},
		),
	},
	{
		name: "past_tense",
		templates: []string{
			"What is the past tense of {A}?",
			"Give me the past tense of the verb {A}.",
			"How do you say {A} in the past tense?",
			"Tell me the past form of {A}.",
			"What is {A} in the past tense?",
		},
		answer: " The past tense of {A} is {B}.",
		rows: pairs(
			[2]string{"run", "ran"}, [2]string{"eat", "ate"}, [2]string{"go", "went"}, [2]string{"see", "saw"},
			[2]string{"swim", "swam"}, [2]string{"write", "wrote"}, [2]string{"sing", "sang"},
			[2]string{"drink", "drank"}, [2]string{"take", "took"}, [2]string{"give", "gave"},
			[2]string{"fly", "flew"}, [2]string{"buy", "bought"}, [2]string{"think", "thought"},
			[2]string{"catch", "caught"}, [2]string{"teach", "taught"}, [2]string{"sleep", "slept"},
			[2]string{"walk", "walked"}, [2]string{"jump", "jumped"}, [2]string{"play", "played"},
			[2]string{"speak", "spoke"},
		),
	},
	{
		name: "comparative",
		templates: []string{
			"What is the comparative of {A}?",
			"Give me the comparative form of {A}.",
			"Turn the adjective {A} into its comparative.",
			"Tell me the comparative of the word {A}.",
			"What is the comparative form of the adjective {A}?",
		},
		answer: " The comparative of {A} is {B}.",
		rows: pairs(
			[2]string{"good", "better"}, [2]string{"bad", "worse"}, [2]string{"big", "bigger"},
			[2]string{"small", "smaller"}, [2]string{"fast", "faster"}, [2]string{"happy", "happier"},
			[2]string{"far", "farther"}, [2]string{"tall", "taller"}, [2]string{"hot", "hotter"},
			[2]string{"easy", "easier"}, [2]string{"long", "longer"}, [2]string{"young", "younger"},
			[2]string{"strong", "stronger"}, [2]string{"cold", "colder"}, [2]string{"old", "older"},
			[2]string{"busy", "busier"}, [2]string{"thin", "thinner"}, [2]string{"wet", "wetter"},
		),
	},
	{
		name: "synonym",
		templates: []string{
			"Give me a word that means {A}.",
			"What is a synonym for {A}?",
			"Which word means the same as {A}?",
			"Tell me another word for {A}.",
			"What word has the same meaning as {A}?",
		},
		answer: " A word that means {A} is {B}.",
		rows: pairs(
			[2]string{"big", "large"}, [2]string{"small", "tiny"}, [2]string{"happy", "glad"},
			[2]string{"fast", "quick"}, [2]string{"begin", "start"}, [2]string{"smart", "clever"},
			[2]string{"shut", "close"}, [2]string{"angry", "mad"}, [2]string{"easy", "simple"},
			[2]string{"loud", "noisy"}, [2]string{"scared", "afraid"}, [2]string{"rich", "wealthy"},
			[2]string{"end", "finish"}, [2]string{"gift", "present"}, [2]string{"sick", "ill"},
			[2]string{"tired", "sleepy"}, [2]string{"hard", "difficult"}, [2]string{"look", "see"},
		),
	},
	{
		name: "rhyme",
		templates: []string{
			"Give me a word that rhymes with {A}.",
			"What rhymes with {A}?",
			"Tell me a rhyme for {A}.",
			"Which word rhymes with {A}?",
			"Can you find a word to rhyme with {A}?",
		},
		answer: " A word that rhymes with {A} is {B}.",
		rows: pairs(
			[2]string{"cat", "hat"}, [2]string{"dog", "log"}, [2]string{"sun", "fun"}, [2]string{"cake", "lake"},
			[2]string{"moon", "spoon"}, [2]string{"star", "car"}, [2]string{"bee", "tree"},
			[2]string{"ring", "king"}, [2]string{"boat", "coat"}, [2]string{"bell", "shell"},
			[2]string{"mouse", "house"}, [2]string{"pen", "ten"}, [2]string{"light", "night"},
			[2]string{"rain", "train"}, [2]string{"fish", "dish"}, [2]string{"bear", "chair"},
			[2]string{"snow", "glow"}, [2]string{"book", "cook"},
		),
	},
	{
		name: "next_day",
		templates: []string{
			"What day comes after {A}?",
			"Which day follows {A}?",
			"What is the day after {A}?",
			"If today is {A}, what day is tomorrow?",
			"Tell me the day that comes after {A}.",
		},
		answer: " The day after {A} is {B}.",
		rows: pairs(
			[2]string{"Monday", "Tuesday"}, [2]string{"Tuesday", "Wednesday"}, [2]string{"Wednesday", "Thursday"},
			[2]string{"Thursday", "Friday"}, [2]string{"Friday", "Saturday"}, [2]string{"Saturday", "Sunday"},
			[2]string{"Sunday", "Monday"},
		),
	},
	{
		name: "next_month",
		templates: []string{
			"What month comes after {A}?",
			"Which month follows {A}?",
			"What is the month after {A}?",
			"If this month is {A}, what is next month?",
			"Tell me the month that comes after {A}.",
		},
		answer: " The month after {A} is {B}.",
		rows: pairs(
			[2]string{"January", "February"}, [2]string{"February", "March"}, [2]string{"March", "April"},
			[2]string{"April", "May"}, [2]string{"May", "June"}, [2]string{"June", "July"},
			[2]string{"July", "August"}, [2]string{"August", "September"}, [2]string{"September", "October"},
			[2]string{"October", "November"}, [2]string{"November", "December"}, [2]string{"December", "January"},
		),
	},
	{
		name: "next_letter",
		templates: []string{
			"What letter comes after {A}?",
			"Which letter follows {A} in the alphabet?",
			"What is the next letter after {A}?",
			"In the alphabet, what comes after {A}?",
			"Tell me the letter that follows {A}.",
		},
		answer: " The letter after {A} is {B}.",
		rows: func() []map[string]string {
			var rows []map[string]string
			for c := 'A'; c < 'Z'; c++ {
				rows = append(rows, map[string]string{"A": string(c), "B": string(c + 1)})
			}
			return rows
		}(),
	},
	{
		name: "shape_sides",
		templates: []string{
			"How many sides does {A} have?",
			"What is the number of sides of {A}?",
			"Count the sides of {A} for me.",
			"Tell me how many sides {A} has.",
			"How many edges does {A} have?",
		},
		answer: " {A^} has {B} sides.",
		rows: pairs(
			[2]string{"a triangle", "three"}, [2]string{"a square", "four"}, [2]string{"a rectangle", "four"},
			[2]string{"a pentagon", "five"}, [2]string{"a hexagon", "six"}, [2]string{"a heptagon", "seven"},
			[2]string{"an octagon", "eight"}, [2]string{"a nonagon", "nine"}, [2]string{"a decagon", "ten"},
		),
	},
	{
		name: "legs",
		templates: []string{
			"How many legs does {A} have?",
			"What is the number of legs of {A}?",
			"Count the legs of {A} for me.",
			"Tell me how many legs {A} has.",
			"How many legs has {A} got?",
		},
		answer: " {A^} has {B} legs.",
		rows: pairs(
			[2]string{"a spider", "eight"}, [2]string{"an ant", "six"}, [2]string{"a beetle", "six"},
			[2]string{"a bee", "six"}, [2]string{"a butterfly", "six"}, [2]string{"a dog", "four"},
			[2]string{"a cat", "four"}, [2]string{"a horse", "four"}, [2]string{"a cow", "four"},
			[2]string{"a duck", "two"}, [2]string{"a chicken", "two"}, [2]string{"a kangaroo", "two"},
			[2]string{"a crab", "ten"}, [2]string{"a snake", "no"}, [2]string{"a person", "two"},
		),
	},
	{
		name: "continent",
		templates: []string{
			"Which continent is {A} in?",
			"On what continent is {A}?",
			"What continent is {A} part of?",
			"Tell me the continent of {A}.",
			"{A} lies on which continent?",
		},
		answer: " {A} is in {B}.",
		rows: pairs(
			[2]string{"Kenya", "Africa"}, [2]string{"Egypt", "Africa"}, [2]string{"Brazil", "South America"},
			[2]string{"Peru", "South America"}, [2]string{"France", "Europe"}, [2]string{"Japan", "Asia"},
			[2]string{"India", "Asia"}, [2]string{"Canada", "North America"}, [2]string{"Mexico", "North America"},
			[2]string{"Norway", "Europe"}, [2]string{"Chile", "South America"}, [2]string{"China", "Asia"},
			[2]string{"Nigeria", "Africa"}, [2]string{"Spain", "Europe"}, [2]string{"Thailand", "Asia"},
			[2]string{"Ghana", "Africa"}, [2]string{"Argentina", "South America"}, [2]string{"Poland", "Europe"},
			[2]string{"Cuba", "North America"}, [2]string{"Vietnam", "Asia"},
		),
	},
	{
		name: "language",
		templates: []string{
			"What language is spoken in {A}?",
			"Which language do people speak in {A}?",
			"What do people in {A} speak?",
			"Tell me the main language of {A}.",
			"What is the language of {A}?",
		},
		answer: " People in {A} speak {B}.",
		rows: pairs(
			[2]string{"Brazil", "Portuguese"}, [2]string{"Mexico", "Spanish"}, [2]string{"France", "French"},
			[2]string{"Germany", "German"}, [2]string{"Japan", "Japanese"}, [2]string{"Italy", "Italian"},
			[2]string{"China", "Chinese"}, [2]string{"Russia", "Russian"}, [2]string{"Greece", "Greek"},
			[2]string{"Poland", "Polish"}, [2]string{"Portugal", "Portuguese"}, [2]string{"Sweden", "Swedish"},
			[2]string{"Turkey", "Turkish"}, [2]string{"Egypt", "Arabic"}, [2]string{"the Netherlands", "Dutch"},
			[2]string{"Norway", "Norwegian"}, [2]string{"Finland", "Finnish"}, [2]string{"Hungary", "Hungarian"},
			[2]string{"Spain", "Spanish"}, [2]string{"Argentina", "Spanish"},
		),
	},
	{
		name: "currency",
		templates: []string{
			"What is the currency of {A}?",
			"Which currency is used in {A}?",
			"What money do they use in {A}?",
			"Tell me the currency of {A}.",
			"What currency do people pay with in {A}?",
		},
		answer: " The currency of {A} is {B}.",
		rows: pairs(
			[2]string{"Japan", "the yen"}, [2]string{"the United Kingdom", "the pound"}, [2]string{"India", "the rupee"},
			[2]string{"China", "the yuan"}, [2]string{"Mexico", "the peso"}, [2]string{"Russia", "the ruble"},
			[2]string{"Switzerland", "the franc"}, [2]string{"South Korea", "the won"}, [2]string{"Brazil", "the real"},
			[2]string{"Turkey", "the lira"}, [2]string{"Poland", "the zloty"}, [2]string{"Sweden", "the krona"},
			[2]string{"Thailand", "the baht"}, [2]string{"South Africa", "the rand"}, [2]string{"Germany", "the euro"},
			[2]string{"France", "the euro"}, [2]string{"Italy", "the euro"}, [2]string{"the United States", "the dollar"},
		),
	},
	{
		name: "element_symbol",
		templates: []string{
			"What is the chemical symbol for {A}?",
			"Which symbol stands for {A} in chemistry?",
			"Give me the chemical symbol of {A}.",
			"Tell me the symbol of the element {A}.",
			"What is the element symbol for {A}?",
		},
		answer: " The chemical symbol for {A} is {B}.",
		rows: pairs(
			[2]string{"gold", "Au"}, [2]string{"silver", "Ag"}, [2]string{"iron", "Fe"}, [2]string{"copper", "Cu"},
			[2]string{"oxygen", "O"}, [2]string{"hydrogen", "H"}, [2]string{"carbon", "C"}, [2]string{"nitrogen", "N"},
			[2]string{"sodium", "Na"}, [2]string{"potassium", "K"}, [2]string{"helium", "He"}, [2]string{"lead", "Pb"},
			[2]string{"tin", "Sn"}, [2]string{"zinc", "Zn"}, [2]string{"calcium", "Ca"}, [2]string{"neon", "Ne"},
			[2]string{"sulfur", "S"}, [2]string{"mercury", "Hg"}, [2]string{"uranium", "U"}, [2]string{"chlorine", "Cl"},
		),
	},
	{
		name: "animal_group",
		templates: []string{
			"What is a group of {A} called?",
			"What do you call a group of {A}?",
			"Which word names a group of {A}?",
			"Tell me the name for a group of {A}.",
			"What is the collective noun for {A}?",
		},
		answer: " A group of {A} is called {B}.",
		rows: pairs(
			[2]string{"lions", "a pride"}, [2]string{"wolves", "a pack"}, [2]string{"fish", "a school"},
			[2]string{"bees", "a swarm"}, [2]string{"crows", "a murder"}, [2]string{"geese", "a gaggle"},
			[2]string{"cows", "a herd"}, [2]string{"sheep", "a flock"}, [2]string{"whales", "a pod"},
			[2]string{"ants", "a colony"}, [2]string{"owls", "a parliament"}, [2]string{"puppies", "a litter"},
			[2]string{"monkeys", "a troop"}, [2]string{"ships", "a fleet"},
		),
	},
	{
		name: "job",
		templates: []string{
			"What do you call a person who {A}?",
			"What is the job of someone who {A}?",
			"Who is a person that {A}?",
			"Name the job of a person who {A}.",
			"What is a person who {A} called?",
		},
		answer: " A person who {A} is {B}.",
		rows: pairs(
			[2]string{"bakes bread", "a baker"}, [2]string{"fixes teeth", "a dentist"}, [2]string{"flies planes", "a pilot"},
			[2]string{"teaches students", "a teacher"}, [2]string{"grows crops", "a farmer"},
			[2]string{"fixes pipes", "a plumber"}, [2]string{"cuts hair", "a barber"}, [2]string{"writes books", "an author"},
			[2]string{"paints pictures", "a painter"}, [2]string{"treats sick animals", "a vet"},
			[2]string{"cooks in a restaurant", "a chef"}, [2]string{"puts out fires", "a firefighter"},
			[2]string{"sells flowers", "a florist"}, [2]string{"designs buildings", "an architect"},
			[2]string{"builds things from wood", "a carpenter"}, [2]string{"studies the stars", "an astronomer"},
		),
	},
	{
		name: "tool",
		templates: []string{
			"What do you use to {A}?",
			"Which tool helps you {A}?",
			"What should I use to {A}?",
			"Tell me what you need to {A}.",
			"What is the right tool to {A}?",
		},
		answer: " You use {B} to {A}.",
		rows: pairs(
			[2]string{"cut paper", "scissors"}, [2]string{"dig a hole", "a shovel"}, [2]string{"hit nails", "a hammer"},
			[2]string{"tell the time", "a clock"}, [2]string{"sweep the floor", "a broom"},
			[2]string{"measure length", "a ruler"}, [2]string{"open a lock", "a key"}, [2]string{"eat soup", "a spoon"},
			[2]string{"boil water", "a kettle"}, [2]string{"take photos", "a camera"},
			[2]string{"see the stars", "a telescope"}, [2]string{"cut wood", "a saw"},
			[2]string{"turn screws", "a screwdriver"}, [2]string{"carry water", "a bucket"},
			[2]string{"brush your teeth", "a toothbrush"}, [2]string{"comb your hair", "a comb"},
		),
	},
	{
		name: "colour_mix",
		templates: []string{
			"What colour do you get by mixing {A}?",
			"What do you get when you mix {A}?",
			"Which colour comes from mixing {A}?",
			"Tell me the colour made by mixing {A}.",
			"If I mix {A}, what colour do I get?",
		},
		answer: " Mixing {A} gives {B}.",
		rows: pairs(
			[2]string{"blue and yellow", "green"}, [2]string{"yellow and blue", "green"},
			[2]string{"red and yellow", "orange"}, [2]string{"yellow and red", "orange"},
			[2]string{"red and blue", "purple"}, [2]string{"blue and red", "purple"},
			[2]string{"red and white", "pink"}, [2]string{"white and red", "pink"},
			[2]string{"black and white", "grey"}, [2]string{"white and black", "grey"},
		),
	},
	{
		name: "fruit_or_vegetable",
		templates: []string{
			"Is {A} a fruit or a vegetable?",
			"Would you call {A} a fruit or a vegetable?",
			"Fruit or vegetable: {A}?",
			"Tell me if {A} is a fruit or a vegetable.",
			"Is {A} a vegetable or a fruit?",
		},
		answer: " {A^} is a {B}.",
		rows: pairs(
			[2]string{"a carrot", "vegetable"}, [2]string{"an apple", "fruit"}, [2]string{"a banana", "fruit"},
			[2]string{"a potato", "vegetable"}, [2]string{"an onion", "vegetable"}, [2]string{"a pear", "fruit"},
			[2]string{"a cabbage", "vegetable"}, [2]string{"a mango", "fruit"}, [2]string{"a leek", "vegetable"},
			[2]string{"a peach", "fruit"}, [2]string{"a plum", "fruit"}, [2]string{"a turnip", "vegetable"},
			[2]string{"a radish", "vegetable"}, [2]string{"a lemon", "fruit"}, [2]string{"a cherry", "fruit"},
			[2]string{"a parsnip", "vegetable"}, [2]string{"a melon", "fruit"}, [2]string{"an apricot", "fruit"},
		),
	},
	{
		name:   "greet",
		answer: " Hello, {A}! Nice to meet you.",
		templates: []string{
			"Say hello to {A}.",
			"Please greet {A}.",
			"Greet my friend {A}.",
			"Can you say hi to {A}?",
			"Write a greeting for {A}.",
		},
		rows: singles(names...),
	},
	{
		name:   "goodbye",
		answer: " Goodbye, {A}! See you soon.",
		templates: []string{
			"Say goodbye to {A}.",
			"Please bid farewell to {A}.",
			"Tell {A} goodbye.",
			"Can you say bye to {A}?",
			"Write a goodbye for {A}.",
		},
		rows: singles(names...),
	},
	{
		name:   "birthday",
		answer: " Happy birthday, {A}! Have a wonderful day.",
		templates: []string{
			"Write a birthday message for {A}.",
			"Wish {A} a happy birthday.",
			"It is {A}'s birthday today. What should I write?",
			"Say happy birthday to {A}.",
			"Help me congratulate {A} on their birthday.",
		},
		rows: singles(names...),
	},
	{
		name:   "name_recall",
		answer: " Your name is {A}.",
		templates: []string{
			"My name is {A}. What is my name?",
			"I am {A}. Do you know my name?",
			"Hi, I'm {A}. What's my name?",
			"Call me {A}. What is my name?",
			"{A} is my name. Can you tell me my name?",
		},
		rows: singles(names...),
	},
	{
		name:    "thank",
		answer:  " Thank you for {B}, {A}!",
		reserve: true,
		templates: []string{
			"Thank {A} for {B}.",
			"Write a thank-you note to {A} for {B}.",
			"Say thanks to {A} for {B}.",
			"Please thank {A} for {B}.",
			"Help me thank {A} for {B}.",
		},
		rows: product(names, gifts),
	},
	{
		name:    "repeat",
		answer:  " {A} {B}",
		reserve: true,
		templates: []string{
			"Repeat after me: {A} {B}.",
			"Please repeat this: {A} {B}.",
			"Say this back to me: {A} {B}.",
			"Echo the words: {A} {B}.",
			"Can you repeat the phrase: {A} {B}?",
		},
		rows: product(phraseAdjectives, phraseNouns),
	},
	{
		name:    "first_word",
		answer:  " The first word is {A}.",
		reserve: true,
		templates: []string{
			"What is the first word of \"{A} {B} {C}\"?",
			"Tell me the first word in \"{A} {B} {C}\".",
			"Which word comes first in \"{A} {B} {C}\"?",
			"Name the first word of \"{A} {B} {C}\".",
			"In \"{A} {B} {C}\", what is the first word?",
		},
		rows: triples(plainWords),
	},
	{
		name:    "last_word",
		answer:  " The last word is {C}.",
		reserve: true,
		templates: []string{
			"What is the last word of \"{A} {B} {C}\"?",
			"Tell me the last word in \"{A} {B} {C}\".",
			"Which word comes last in \"{A} {B} {C}\"?",
			"Name the last word of \"{A} {B} {C}\".",
			"In \"{A} {B} {C}\", what is the last word?",
		},
		rows: triples(plainWords),
	},
}
