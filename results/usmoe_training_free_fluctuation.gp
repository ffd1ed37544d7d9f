set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_training_free_fluctuation.png.tmp.22902'
$s0 << EOD
2 78.0126953 69.2248883 86.8005023
3 45.5029297 38.5185835 52.4872759
4 26.8115234 22.0966561 31.5263908
5 20.6811523 18.0951478 23.2671569
6 15.9667969 14.1410194 17.7925744
7 12.4389648 10.8313546 14.0465751
8 9.97070312 9.27056968 10.6708366
9 9.19189453 6.76310147 11.6206876
10 8.38134766 6.18717171 10.5755236
EOD
set title "USMoE, training-free: one trained token-choice model\nevaluated with each router swapped in: top-1 routing\nfluctuation per epoch, mean over seeds and its 95% interval"
set xlabel "epoch e (change since epoch e - 1)"
set ylabel "top-1 fluctuation (%, mean over MoE layers)"
set grid
set key outside right top
set xtics 1
set autoscale xfix
set offsets 0.32, 0.32, 0, 0
set yrange [0:91.1405274]
set style fill transparent solid 0.18 noborder
set arrow 1 from 10, graph 0 to 10, graph 1 nohead dt 2 lw 1.5 lc rgb '#555555'
set label 1 "paper's figure: the last two epochs" at 10, graph 0.97 right offset -0.6,0 textcolor rgb '#555555'
plot $s0 using 1:3:4 with filledcurves lc 1 notitle, $s0 using 1:2 with linespoints lw 2 lc 1 title "Token choice (trained)"
