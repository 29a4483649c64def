// Package suggest finds what a user probably meant by a mistyped command,
// flag or profile name.
package suggest

// Closest returns the candidate nearest to typed by edit distance, or ""
// when none is near enough to be a typo of it: at most a third of its
// letters wrong (one for short words), and not every letter.
func Closest(typed string, candidates []string) string {
	best, bestDist := "", max(1, len(typed)/3)+1
	for _, c := range candidates {
		if d := Distance(typed, c); d < bestDist && d < len(c) {
			best, bestDist = c, d
		}
	}
	return best
}

// Distance is the Levenshtein distance with adjacent transpositions
// counted as one edit ("conenct" is one typo away from "connect").
func Distance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
