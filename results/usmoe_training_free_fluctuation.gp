set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_training_free_fluctuation.png.tmp.22130'
$s0 << EOD
2 67.0979818
3 29.5898438
4 15.1692708
5 9.35058594
6 5.55013021
EOD
set title "USMoE, training-free: one trained token-choice model\nevaluated with each router swapped in: routing fluctuation\nper epoch"
set xlabel "epoch"
set ylabel "top-1 fluctuation (%, mean over layers and seeds)"
set grid
set key outside right top
set xtics 1
plot $s0 using 1:2 with linespoints lw 2 title "Token choice (trained)"
