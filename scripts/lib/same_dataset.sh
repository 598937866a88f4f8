# Shared by scripts/slurm_test.sh and scripts/ray_test.sh: source it, then
# `same_dataset A B` succeeds when the prepared folders A and B hold the same
# files with the same bytes, prepare-timings.json aside (it says how long
# each run took); it names each file that differs.

same_dataset() {  # ONE OTHER
    local f name differ=0
    for f in "$1"/*; do
        name=$(basename "$f")
        [ "$name" = prepare-timings.json ] && continue
        cmp -s "$f" "$2/$name" || { echo "differs: $name"; differ=1; }
    done
    [ "$(ls "$1" | wc -l)" = "$(ls "$2" | wc -l)" ] || { echo "other files: $(ls "$1") / $(ls "$2")"; differ=1; }
    return "$differ"
}
