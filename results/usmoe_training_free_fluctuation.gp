set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_training_free_fluctuation.png.tmp.12145'
$s0 << EOD
2 63.8468424
3 32.6293945
4 16.9189453
5 9.97314453
6 5.64371745
EOD
set title "USMoE, training-free: one trained token-choice model\nevaluated with each router swapped in: routing fluctuation\nper epoch"
set xlabel "epoch"
set ylabel "top-1 fluctuation (%, mean over layers and seeds)"
set grid
set key outside right top
set xtics 1
plot $s0 using 1:2 with linespoints lw 2 title "Token choice (trained)"
